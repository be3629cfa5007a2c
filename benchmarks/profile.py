"""Where `python -m tokens serve` spends its CPU under load: `python -m benchmarks.profile`.

Starts the fake Direct Line and `serve` as the throughput measurement does, loads `serve` with wrk
at one concurrency, and meanwhile samples every thread of every serving process with py-spy (a
sampling profiler that reads the processes from outside, so it does not slow them as an in-process
profiler would). It samples only the thread holding the GIL (`--gil`): the interpreter's work, which
is where a Python server's CPU goes, while a thread waiting on a socket or a lock is not counted.
Work done with the GIL released (the kernel's side of sockets, OpenSSL's encryption) is not in the
samples; the kernel's share comes from /proc instead (system against user CPU time). Each sample is
put in the part of the server its innermost frame belongs to; a frame of the standard library with no
part of its own (json, re, urllib.parse...) counts for the nearest caller that has one.

    python -m benchmarks.profile [--seconds 20] [--concurrency 64] [--workers 2] [--threads 16]

py-spy (from requirements-dev.txt) and wrk (Debian's) must be installed; this is a tool for a person
looking at performance, not part of `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import collections
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks.fake_directline import started_fake
from benchmarks.load import run_wrk, wrk_path
from benchmarks.processes import Server, cpu_times, serve_command, started, token_url
from benchmarks.run import app_settings
from tests.certs import make_certificate
from tests.served import child_environment, free_port

# (part, the source files that belong to it: a directory ends in "/"), first match wins. py-spy names
# a frame's file relative to its sys.path entry: "ssl.py", "waitress/task.py", "tokens/service.py".
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TLS (ssl)", ("ssl.py",)),
    ("sockets (send, recv, poll)", ("socket.py", "selectors.py")),
    ("logging", ("logging/", "tokens/logs.py")),
    # waitress, and what serve adds to it: the WSGI adapter, the event loop, the connection policy.
    ("HTTP server (waitress, tokens/server.py, eventloop.py, connections.py)", (
        "waitress/", "tokens/server.py", "tokens/eventloop.py", "tokens/connections.py",
    )),
    ("Direct Line client (requests, urllib3, http.client)", ("requests/", "urllib3/", "http/client.py")),
    ("app (tokens/, limits)", ("tokens/", "limits/")),
    ("threads and queues", ("threading.py", "queue.py", "concurrent/")),
)
UNPLACED = "other"


def part_of(stack: Sequence[str]) -> str:
    """The part a sample belongs to, from its frames (outermost first, py-spy's raw order), each
    `function (file:line)`."""
    for frame in reversed(stack):
        source = frame[frame.rfind("(") + 1 : frame.rfind(":")]
        for part, sources in PARTS:
            if any(source.startswith(name) if name.endswith("/") else source == name for name in sources):
                return part
    return UNPLACED


def split(raw_lines: Iterable[str]) -> collections.Counter[str]:
    """Samples per part, from py-spy's raw output: one `frame;frame;... count` line per stack."""
    samples: collections.Counter[str] = collections.Counter()
    for line in raw_lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            samples[part_of(stack.split(";"))] += int(count)
    return samples


def profile(seconds: float, concurrency: int, workers: int, threads: int, delay_ms: float) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    wrk = wrk_path()
    if wrk is None or not Path(spy).exists():
        raise SystemExit("python -m benchmarks.profile needs wrk and py-spy")
    with tempfile.TemporaryDirectory(prefix="profile-") as temp:
        work = Path(temp)
        certs = make_certificate(work)
        secret = "bench-" + secrets.token_urlsafe(24)
        with started_fake(certs, secret, delay_ms) as fake:
            env = child_environment(app_settings(fake.endpoint, secret, certs))
            port = free_port()
            flags = ("--workers", str(workers), "--threads", str(threads))
            with started(env, Server(serve_command(port, *flags), port, work / "serve.log")) as (serve,):
                run_wrk(token_url(port), concurrency, 3, wrk)  # warm: pools, caches, threads
                raw = work / "profile.txt"
                record = [spy, "record", "--pid", str(serve.pid), "--subprocesses", "--gil", "--nonblocking"]
                record += ["--rate", "250", "--duration", str(round(seconds)), "--format", "raw"]
                record += ["--output", str(raw)]
                recorder = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)  # py-spy attached
                user_before, system_before = cpu_times(serve.pid)
                load = run_wrk(token_url(port), concurrency, seconds - 1, wrk)
                user_after, system_after = cpu_times(serve.pid)
                user, system = user_after - user_before, system_after - system_before
                recorder.wait(timeout=seconds + 60)
                samples = split(raw.read_text().splitlines())
    used = user + system
    total = sum(samples.values()) or 1
    per_request = used / max(load.requests, 1) * 1e6
    lines = [
        f"`serve --workers {workers} --threads {threads}`, wrk at c={concurrency} for {load.seconds:.0f} s "
        f"against the fake at {delay_ms:g} ms: {load.rps:,.0f} requests/s, {load.errors} errors, "
        f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms; {per_request:,.0f} µs of CPU per request, "
        f"{system / used if used else 0:.0%} of it in the kernel (system time) and "
        f"{user / used if used else 0:.0%} in the processes (user time).",
        "",
        "Of the user time, by part (samples of the thread holding the GIL):",
        "",
        "| part | share of samples | µs per request |",
        "| --- | ---: | ---: |",
        *(
            f"| {part} | {count / total:.0%} | {count / total * user / max(load.requests, 1) * 1e6:,.0f} |"
            for part, count in samples.most_common()
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    print(profile(args.seconds, args.concurrency, args.workers, args.threads, args.delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
