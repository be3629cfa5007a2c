"""Load generators for `serve`, the Node peer and the fake Direct Line itself: wrk (Debian's
/usr/bin/wrk) with a small Lua script, or a threaded Python one where wrk is missing. Both POST the
same body and headers (a token request as the Web Chat page sends it, unless told otherwise), over
HTTP or HTTPS, keep connections alive, count every error (a failed connection, read or write, a
timeout, or any answer but 200) and stop after a bounded time."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.inprocess import ORIGIN, TOKEN_BODY
from benchmarks.stats import median, percentile

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
WRK_PREFIX = "WRK_RESULT "
REQUEST_TIMEOUT = 10.0
HEADERS = {"Content-Type": "application/json", "Origin": ORIGIN}


@dataclass(frozen=True)
class LoadResult:
    tool: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def merged(turns: Sequence[LoadResult]) -> LoadResult:
    """One result from several turns at the same concurrency: requests, time and errors added up;
    each percentile the median of the turns' own (wrk reports percentiles, not its samples)."""
    first = turns[0]
    return LoadResult(
        tool=first.tool,
        concurrency=first.concurrency,
        seconds=sum(turn.seconds for turn in turns),
        requests=sum(turn.requests for turn in turns),
        errors=sum(turn.errors for turn in turns),
        p50_ms=median([turn.p50_ms for turn in turns]),
        p90_ms=median([turn.p90_ms for turn in turns]),
        p99_ms=median([turn.p99_ms for turn in turns]),
        max_ms=max(turn.max_ms for turn in turns),
    )


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    concurrency: int,
    seconds: float,
    wrk: str,
    *,
    body: bytes = TOKEN_BODY,
    headers: Mapping[str, str] = HEADERS,
) -> LoadResult:
    threads = min(2, concurrency)
    command = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{round(REQUEST_TIMEOUT)}s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    env = {
        **os.environ,
        "WRK_BODY": body.decode(),
        "WRK_HEADERS": "\n".join(f"{name}: {value}" for name, value in headers.items()),
    }
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False, env=env
    )
    for line in done.stdout.splitlines():
        if line.startswith(WRK_PREFIX):
            data = json.loads(line[len(WRK_PREFIX) :])
            errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
            return LoadResult(
                tool="wrk",
                concurrency=concurrency,
                seconds=data["duration_us"] / 1e6,
                requests=data["requests"],
                errors=errors,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def run_python(
    url: str,
    concurrency: int,
    *,
    seconds: float | None = None,
    total: int | None = None,
    body: bytes = TOKEN_BODY,
    headers: Mapping[str, str] = HEADERS,
    ca_file: Path | None = None,
) -> LoadResult:
    """`concurrency` threads, each with one kept-alive connection, until `seconds` pass or `total`
    requests have been sent, whichever comes first (at least one of them must be given). An https
    URL is trusted through `ca_file`."""
    if seconds is None and total is None:
        raise ValueError("give seconds, total or both")
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    connect = _connector(parts.scheme, host, parts.port, ca_file)
    issued = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    started = time.perf_counter()
    deadline = started + (seconds if seconds is not None else 3600.0)

    crashes: list[Exception] = []

    def worker(index: int) -> None:
        conn = connect()
        try:
            while time.perf_counter() < deadline:
                if total is not None and next(issued) >= total:
                    return
                sent = time.perf_counter()
                try:
                    conn.request("POST", parts.path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = connect()
                latencies[index].append((time.perf_counter() - sent) * 1000)
                errors[index] += 0 if ok else 1
        except Exception as exc:  # a bug here must fail the run, not quietly thin out the load
            crashes.append(exc)
        finally:
            conn.close()

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if crashes:
        raise RuntimeError("the Python load generator failed") from crashes[0]
    elapsed = time.perf_counter() - started
    samples = [latency for per_thread in latencies for latency in per_thread]
    return LoadResult(
        tool="python",
        concurrency=concurrency,
        seconds=elapsed,
        requests=len(samples),
        errors=sum(errors),
        p50_ms=percentile(samples, 50),
        p90_ms=percentile(samples, 90),
        p99_ms=percentile(samples, 99),
        max_ms=max(samples, default=float("nan")),
    )


def _connector(
    scheme: str, host: str, port: int | None, ca_file: Path | None
) -> Callable[[], http.client.HTTPConnection]:
    """How each thread opens its connection; over TLS, all share one context (loading the trust
    store once)."""
    if scheme != "https":
        return lambda: http.client.HTTPConnection(host, port or 80, timeout=REQUEST_TIMEOUT)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return lambda: http.client.HTTPSConnection(host, port or 443, timeout=REQUEST_TIMEOUT, context=context)
