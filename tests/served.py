"""`python -m tokens serve` as a child process, its log and its resident memory: used by the tests
(through `tests/conftest.py`) and by the benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
# Inherited settings that could change what is measured; the benchmark sets its own.
_DROPPED_PREFIXES = ("DIRECT_LINE", "AUTH_", "RATE_", "ALLOWED_", "USER_HANDLE", "TRUSTED_", "AUDIT_")


@dataclass(frozen=True)
class ServedApp:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/api/directline/token"

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    def audit_lines(self) -> int:
        return sum(1 for line in self.log_text().splitlines() if " tokens.audit " in line)

    def log_text(self) -> str:
        """The log so far. The server writes it from a queue, a moment after each request: wait
        until it has stopped growing for a while (two seconds at most)."""
        text = self.log_path.read_text(errors="replace")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            again = self.log_path.read_text(errors="replace")
            if again == text:
                break
            text = again
        return text

    def audit_records(self) -> list[dict[str, Any]]:
        return [
            json.loads(line.split(" tokens.audit ", 1)[1])
            for line in self.log_text().splitlines()
            if " tokens.audit " in line
        ]


def rss_kib(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_DROPPED_PREFIXES)}
    env.update(settings)
    env["PYTHONPATH"] = str(ROOT)  # `-m tokens` and `demo` from any working directory
    return env


@contextlib.contextmanager
def serving(
    settings: Mapping[str, str],
    log_path: Path,
    *,
    threads: int | None = None,
    workers: int | None = None,
    demo: bool = False,
    args: Sequence[str] = (),
    ready_statuses: Collection[int] = (200,),
    cwd: Path | None = None,
    module: str = "tokens",
    stderr: Any = subprocess.STDOUT,
) -> Iterator[ServedApp]:
    """Start `serve` on a free loopback port and wait until /api/health answers one of
    `ready_statuses`; stop it afterwards. It runs in `cwd`, by default the log's directory: never
    in the repository, whose own local.settings.json or .env (a developer's) would apply. `module`
    is what `python -m` runs: `tokens`, or a test's launcher that takes the same command line.
    Standard error goes to the log with standard output, unless `stderr` says where else."""
    port = free_port()
    command = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if threads is not None:
        command += ["--threads", str(threads)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if demo:
        command.append("--demo")
    command += args
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd or log_path.parent, env=child_environment(settings), stdout=log, stderr=stderr
        )
    try:
        app = ServedApp(process, f"http://127.0.0.1:{port}", log_path)
        _wait_until_up(app, ready_statuses)
        yield app
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _wait_until_up(app: ServedApp, ready_statuses: Collection[int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"serve exited early:\n{app.log_path.read_text(errors='replace')}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{app.base_url}/api/health", timeout=1).status_code in ready_statuses:
                return
        time.sleep(0.1)
    raise RuntimeError(f"serve did not start:\n{app.log_path.read_text(errors='replace')}")
