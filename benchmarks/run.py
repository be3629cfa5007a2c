"""Run every benchmark and write RESULTS.md and latency.png: `python -m benchmarks [--quick]`.

1. proxy overhead: the app's token function in process, against the naive baseline and the floor;
2. throughput and latency through `python -m tokens serve` at several concurrencies;
3. cold start: fresh processes importing `function_app`, against `azure.functions` + `requests`;
4. memory: VmRSS of `serve` after 100 and after 20,000 requests.

All against one fake Direct Line on loopback over HTTPS, started here and stopped at the end, like
every other process this starts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks import report
from benchmarks.coldstart import measure_cold_start
from benchmarks.inprocess import ORIGIN, measure_overhead, profile_app
from benchmarks.load import LoadResult, run_python, run_wrk, wrk_path
from benchmarks.results import Machine, MemoryResult, Plan, Results, ThroughputResult
from tests.certs import make_certificate
from tests.fakes import running_fake
from tests.served import child_environment, serving

BENCHMARKS_DIR = Path(__file__).resolve().parent
NO_LIMIT = "1000000/second"


def app_settings(endpoint: str, secret: str, ca_bundle: Path) -> dict[str, str]:
    return {
        "DIRECT_LINE_SECRET": secret,
        "DIRECT_LINE_ENDPOINT": endpoint,
        "ALLOWED_ORIGINS": ORIGIN,
        "AUTH_MODE": "anonymous",
        "RATE_LIMIT": NO_LIMIT,
        "GLOBAL_RATE_LIMIT": NO_LIMIT,
        "UPSTREAM_TIMEOUT": "5",
        "REQUESTS_CA_BUNDLE": str(ca_bundle),
    }


def say(message: str) -> None:
    print(f"[benchmarks {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_throughput(settings: Mapping[str, str], plan: Plan, work: Path, loadgen: str) -> ThroughputResult:
    wrk = wrk_path() if loadgen in ("auto", "wrk") else None
    if loadgen == "wrk" and wrk is None:
        raise RuntimeError("--loadgen wrk, but wrk is not installed")
    loads: list[LoadResult] = []
    with serving(settings, work / "serve-throughput.log", threads=plan.serve_threads) as app:
        run_python(app.token_url, 8, seconds=1.0)  # warm-up: pools, caches, threads
        for concurrency in plan.concurrency:
            say(f"serve at concurrency {concurrency}")
            if wrk is not None:
                load = run_wrk(app.token_url, concurrency, plan.load_seconds, wrk)
            else:
                load = run_python(app.token_url, concurrency, seconds=plan.load_seconds)
            loads.append(load)
    return ThroughputResult(plan.serve_threads, tuple(loads))


def measure_memory(settings: Mapping[str, str], plan: Plan, work: Path) -> MemoryResult:
    checkpoints: list[tuple[int, int]] = []
    answered = errors = 0
    with serving(settings, work / "serve-memory.log", threads=plan.serve_threads) as app:
        for target in plan.memory_checkpoints:
            say(f"memory: up to {target:,} requests")
            load = run_python(app.token_url, plan.memory_concurrency, total=target - answered)
            answered += load.requests
            errors += load.errors
            time.sleep(0.2)  # let the last responses' buffers go before reading VmRSS
            checkpoints.append((answered, app.rss_kib()))
        audit_lines = app.audit_lines()
    return MemoryResult(plan.memory_concurrency, tuple(checkpoints), errors, audit_lines)


def run(plan: Plan, output: Path, loadgen: str, command: str) -> Results:
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    load_before = os.getloadavg()
    secret = "bench-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as temp:
        work = Path(temp)
        certs = make_certificate(work)
        with running_fake(certs, secret, plan.delay_ms) as endpoint:
            settings = app_settings(endpoint, secret, certs.ca_bundle)
            os.environ.update(settings)  # for the in-process app, before it reads its settings
            say("1. proxy overhead, in process")
            overhead = measure_overhead(
                endpoint,
                secret,
                ca_file=certs.ca_bundle,
                samples=plan.overhead_samples,
                log_dir=work,
            )
            profile_path = work / "profile.txt"
            profile_app(plan.profile_samples, work, profile_path)
            say("2. throughput through serve")
            throughput = measure_throughput(settings, plan, work, loadgen)
            say("4. memory of serve")
            memory = measure_memory(settings, plan, work)
            say("3. cold start")
            cold = measure_cold_start(child_environment(settings), plan.cold_runs, plan.import_profile_runs)
            profile_text = profile_path.read_text(encoding="utf-8")
    machine = Machine(
        python=platform.python_version(),
        cpus=os.cpu_count() or 0,
        load_before=load_before,
        load_after=os.getloadavg(),
        started=started_at.strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.monotonic() - started,
    )
    results = Results(plan, machine, overhead, throughput, cold, memory, profile_text)
    output.mkdir(parents=True, exist_ok=True)
    report.plot(results, output / "latency.png")
    (output / "RESULTS.md").write_text(report.render(results, command), encoding="utf-8")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="run each measurement briefly (~1 min)")
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCHMARKS_DIR,
        help="where RESULTS.md and latency.png go (default: benchmarks/)",
    )
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the fake's fixed delay")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator for serve: wrk when installed (auto), or Python",
    )
    args = parser.parse_args(argv)
    plan = Plan.make(quick=args.quick, delay_ms=args.delay_ms)
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    results = run(plan, args.output, args.loadgen, command)
    say(f"wrote {args.output / 'RESULTS.md'} and {args.output / 'latency.png'}")
    for target in report.targets(results):
        say(f"{'met   ' if target.met else 'MISSED'} {target.name}: {target.measured}")
    if results.errors:
        # Failed calls are fast calls: with any, the latencies above measure the wrong thing.
        say(f"FAILED: {results.errors} calls failed; these numbers are not a measurement")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
