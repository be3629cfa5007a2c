"""Run every benchmark and write RESULTS.md and latency.png: `python -m benchmarks [--quick | --smoke]`.

1. proxy overhead: the app's token function in process, against the naive baseline and two floors;
2. throughput and latency: the fake Direct Line alone, then `python -m tokens serve` and the Node
   peer side by side at several concurrencies, each level as a share of the c / delay ceiling, with
   the CPU each uses per request; a run whose Node peer stays under 85 % of the ceiling is
   fake-bound, no result (benchmarks/validity.py);
3. cold start: process start to first token for `serve`, the naive server and the Node peer, and
   the time to import `function_app` against `azure.functions` + `requests`;
4. memory: VmRSS of `serve` over thousands of requests, and its audit lines counted;
5. concurrency per instance: the app in Microsoft's Python worker (`azure-functions-runtime`) at N
   concurrent invocations, against the fake at 20 and 200 ms (`benchmarks/flex.py`).

All against one fake Direct Line on loopback over HTTPS (benchmarks/fake_directline.py), started
here and stopped at the end, like every other process this starts. `--quick` cuts every measurement
short (about a minute); `--smoke` runs each with a handful of samples (a few seconds), to show that
all of it still works, and judges nothing.

Exits 1 when a call failed, an audit line is missing, or the run is fake-bound.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report
from benchmarks.coldstart import ColdStartResult, loaded_app_sources, measure_cold_start
from benchmarks.fake_directline import started_fake
from benchmarks.flex import measure_flex
from benchmarks.hosted import measure_memory, measure_throughput
from benchmarks.inprocess import ORIGIN, OverheadResult, measure_overhead, profile_app
from benchmarks.results import Machine, MemoryResult, Plan, Results, ThroughputResult
from tests.certs import CertFiles, make_certificate
from tests.served import child_environment

BENCHMARKS_DIR = Path(__file__).resolve().parent
NO_LIMIT = "1000000/second"


def app_settings(endpoint: str, secret: str, certs: CertFiles) -> dict[str, str]:
    return {
        "DIRECT_LINE_SECRET": secret,
        "DIRECT_LINE_ENDPOINT": endpoint,
        "ALLOWED_ORIGINS": ORIGIN,
        "AUTH_MODE": "anonymous",
        "RATE_LIMIT": NO_LIMIT,
        "GLOBAL_RATE_LIMIT": NO_LIMIT,
        "UPSTREAM_TIMEOUT": "5",
        "REQUESTS_CA_BUNDLE": str(certs.ca_bundle),
        "NODE_EXTRA_CA_CERTS": str(certs.cert),  # the Node peer's trust in the run's certificate
    }


def say(message: str) -> None:
    print(f"[benchmarks {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


Measured = tuple[OverheadResult, ThroughputResult, ColdStartResult, MemoryResult, str]


def measure(plan: Plan, work: Path) -> Measured:
    """Every measurement against one fake Direct Line, and the profile's call tree."""
    secret = "bench-" + secrets.token_urlsafe(24)
    certs = make_certificate(work)
    with started_fake(certs, secret, plan.delay_ms) as fake:
        endpoint = fake.endpoint
        settings = app_settings(endpoint, secret, certs)
        os.environ.update(settings)  # for the in-process app, before it reads its settings
        say("1. proxy overhead, in process")
        overhead = measure_overhead(
            endpoint,
            secret,
            ca_file=certs.ca_bundle,
            samples=plan.overhead_samples,
            warmup=plan.overhead_warmup,
            log_dir=work,
        )
        sources = loaded_app_sources()
        profile_text = profile_app(plan.profile_samples, plan.overhead_warmup, work)
        say("2. throughput: the fake alone, then serve and the Node peer")
        throughput = measure_throughput(settings, plan, work, fake)
        say("4. memory of serve")
        memory = measure_memory(settings, plan, work)
        say("3. cold start")
        cold = measure_cold_start(
            child_environment(settings),
            work,
            runs=plan.cold_runs,
            untimed_runs=plan.cold_untimed_runs,
            profile_runs=plan.import_profile_runs,
            sources=sources,
        )
    return overhead, throughput, cold, memory, profile_text


def node_version() -> str:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def run(plan: Plan, output: Path) -> Results:
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    load_before = os.getloadavg()
    # Every process started here keeps and uses bytecode, as a deployed app does: the cold start is
    # timed with the .pyc files in place.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as temp:
        measured = measure(plan, Path(temp))
        say("5. concurrency per instance through Microsoft's worker")
        flex = measure_flex(plan.flex, Path(temp), app_settings)
    machine = Machine(
        python=platform.python_version(),
        node=node_version(),
        cpus=os.cpu_count() or 0,
        load_before=load_before,
        load_after=os.getloadavg(),
        started=started_at.strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.monotonic() - started,
    )
    results = Results(plan, machine, *measured, flex=flex)
    output.mkdir(parents=True, exist_ok=True)
    report.plot(results, output / "latency.png")
    (output / "RESULTS.md").write_text(report.render(results), encoding="utf-8")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="cut every measurement short (about a minute)")
    modes.add_argument("--smoke", action="store_true", help="a handful of samples of each (a few seconds)")
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCHMARKS_DIR,
        help="where RESULTS.md and latency.png go (default: benchmarks/)",
    )
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the fake's fixed delay")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    results = run(Plan.make(mode, delay_ms=args.delay_ms), args.output)
    say(f"wrote {args.output / 'RESULTS.md'} and {args.output / 'latency.png'}")
    say(f"throughput run {results.validity.reason}")
    for target in report.targets(results):
        say(f"{target.result.upper():10} {target.name}: {target.measured}")
    failures = results.failures()
    for failure in failures:
        say(f"FAILED: {failure}; these numbers are not a measurement")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
