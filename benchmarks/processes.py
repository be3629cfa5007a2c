"""The measured servers as processes of their own: the command that starts each (`serve`, the naive
server, the Node peer), starting one and waiting until it listens, asking it for one token, and the
CPU time it has used (from Linux's /proc)."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.inprocess import TOKEN_BODY
from benchmarks.load import HEADERS
from tests.served import ROOT, stop_process

TOKEN_PATH = "/api/directline/token"
NODE_PEER = Path(__file__).resolve().parent / "node_peer.js"
START_TIMEOUT = 30.0
POLL_SECONDS = 0.002
REQUEST_TIMEOUT = 10.0


def serve_command(port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "tokens", "serve", "--host", "127.0.0.1", "--port", str(port), *flags]


def naive_command(port: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.naive", "--port", str(port)]


def node_command(port: int) -> list[str]:
    return ["node", str(NODE_PEER), str(port)]


def token_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{TOKEN_PATH}"


@dataclass(frozen=True)
class Server:
    command: list[str]
    port: int  # where it listens
    log_path: Path  # where its output goes


@contextlib.contextmanager
def started(env: Mapping[str, str], *servers: Server) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every server at once, wait until each accepts connections on its port, and stop them
    all afterwards, whatever happens."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for server in servers:
            with server.log_path.open("ab") as log:
                processes.append(
                    subprocess.Popen(server.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
        for server, process in zip(servers, processes, strict=True):
            _wait_listening(process, server.port, server.log_path)
        yield processes
    finally:
        for process in processes:
            stop_process(process)


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early:\n{log_path.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(POLL_SECONDS)
        else:
            return
    raise RuntimeError(f"{process.args!r} did not listen:\n{log_path.read_text(errors='replace')}")


def ask_for_token(port: int) -> bool:
    """POST one token request, as the Web Chat page does; whether a token came back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("POST", TOKEN_PATH, body=TOKEN_BODY, headers=HEADERS)
        response = conn.getresponse()
        return response.status == 200 and b'"token"' in response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time used so far by a process, all its threads and its child processes
    (the worker processes of a multi-worker `serve`)."""
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """`cpu_seconds` in its two parts: (in the process itself, in the kernel on its behalf)."""
    ticks = [_cpu_ticks(process) for process in (pid, *_children(pid))]
    per_second = os.sysconf("SC_CLK_TCK")
    return sum(user for user, _ in ticks) / per_second, sum(system for _, system in ticks) / per_second


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that has just ended
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _cpu_ticks(pid: int) -> tuple[int, int]:
    # utime and stime are fields 14 and 15 of /proc/<pid>/stat (proc(5)); the command name, field
    # 2, is in parentheses and may hold spaces, so count from the closing one.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])
