"""Which HTTP server should host the app: `python -m benchmarks.servers`.

The same application (route table, settings, confirmed audit log: benchmarks/granian_app.py) under
waitress, as `python -m tokens serve` runs it, and under granian (a Rust HTTP server with a WSGI
interface), each with the same worker processes and threads (by default as `python -m benchmarks`
runs serve: a process per CPU and one more, and a thread for every caller), side by side with the
Node peer, against the fake Direct Line; all three run at once and take turns, `--rounds` times, so
that whatever else the machine does falls on each alike. Reports requests/s, its share of the
c/delay ceiling, p50/p99 and CPU per request (the server's processes, from /proc) for each.

    python -m benchmarks.servers [--seconds 10] [--concurrency 64] [--rounds 3] [--workers N] [--threads N]

granian is not a dependency of the app: `pip install granian` first. A tool for the choice written
down in docs/benchmarks.md, not part of `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.fake_directline import started_fake
from benchmarks.load import LoadResult, run_wrk, wrk_path
from benchmarks.processes import Server, cpu_seconds, node_command, serve_command, started, token_url
from benchmarks.results import serve_shape
from benchmarks.run import app_settings
from benchmarks.stats import ratio
from benchmarks.validity import ceiling_rps, share_of_ceiling
from tests.certs import make_certificate
from tests.served import child_environment, free_port


def granian_command(port: int, workers: int, threads: int) -> list[str]:
    granian = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
    return [
        granian, "--interface", "wsgi", "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--blocking-threads", str(threads), "--no-access-log",
        "benchmarks.granian_app:app",
    ]


def compare(
    seconds: float, concurrency: int, rounds: int, delay_ms: float, *, workers: int, threads: int
) -> str:
    wrk = wrk_path()
    if wrk is None:
        raise SystemExit("python -m benchmarks.servers needs wrk")
    with tempfile.TemporaryDirectory(prefix="servers-") as temp:
        work = Path(temp)
        certs = make_certificate(work)
        secret = "bench-" + secrets.token_urlsafe(24)
        with started_fake(certs, secret, delay_ms) as fake:
            env = child_environment(app_settings(fake.endpoint, secret, certs))
            env["BENCH_THREADS"] = str(threads)
            ports = [free_port() for _ in range(3)]
            flags = ("--workers", str(workers), "--threads", str(threads))
            servers = {
                f"waitress (`serve --workers {workers} --threads {threads}`)": Server(
                    serve_command(ports[0], *flags), ports[0], work / "waitress.log"
                ),
                f"granian WSGI, {workers} workers x {threads} blocking threads": Server(
                    granian_command(ports[1], workers, threads), ports[1], work / "granian.log"
                ),
                "Node peer": Server(node_command(ports[2]), ports[2], work / "node.log"),
            }
            with started(env, *servers.values()) as processes:
                pids = [process.pid for process in processes]
                for server in servers.values():  # warm: pools, caches, threads
                    run_wrk(token_url(server.port), concurrency, 3, wrk)
                measured: dict[str, list[tuple[LoadResult, float]]] = {name: [] for name in servers}
                for _ in range(rounds):
                    for (name, server), pid in zip(servers.items(), pids, strict=True):
                        before = cpu_seconds(pid)
                        load = run_wrk(token_url(server.port), concurrency, seconds, wrk)
                        measured[name].append((load, cpu_seconds(pid) - before))
    ceiling = ceiling_rps(concurrency, delay_ms)
    node_rps = sum(load.rps for load, _ in measured["Node peer"]) / rounds
    lines = [
        f"wrk at c={concurrency}, {rounds} rounds of {seconds:g} s each in turn, fake at {delay_ms:g} ms "
        f"(ceiling {ceiling:,.0f} requests/s); means over the rounds:",
        "",
        "| server | requests/s | share of ceiling | share of Node | p50 ms | p99 ms | CPU µs/request "
        "| errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in measured.items():
        requests = sum(load.requests for load, _ in runs)
        rps = sum(load.rps for load, _ in runs) / rounds
        p50 = sum(load.p50_ms for load, _ in runs) / rounds
        p99 = sum(load.p99_ms for load, _ in runs) / rounds
        cpu_us = ratio(sum(used for _, used in runs), requests) * 1e6
        errors = sum(load.errors for load, _ in runs)
        share = share_of_ceiling(rps, concurrency, delay_ms)
        lines.append(
            f"| {name} | {rps:,.0f} | {share:.0%} | {ratio(rps, node_rps):.2f} "
            f"| {p50:.1f} | {p99:.1f} | {cpu_us:,.0f} | {errors} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, help="default: one per CPU and one more")
    parser.add_argument("--threads", type=int, help="default: the concurrency shared among the workers")
    args = parser.parse_args(argv)
    workers, threads = serve_shape(args.concurrency, args.workers)
    threads = args.threads or threads
    table = compare(
        args.seconds, args.concurrency, args.rounds, args.delay_ms, workers=workers, threads=threads
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
