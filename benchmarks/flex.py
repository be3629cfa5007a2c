"""Measurement 5: how many token invocations one Flex Consumption instance can take at once, through
Microsoft's own Python worker.

The app runs in `azure-functions-runtime` (the library worker the platform loads for Python 3.13),
driven by the harness in `tests/functions_host` the way the Functions host drives it: N threads here
each send an HTTP invocation of `directline_token`, wait for its answer and send the next, against
the fake Direct Line at a fixed delay (20 ms, and 200 ms for a slow or distant Direct Line). For each N
it reports invocations per second, p50/p99 latency, and the worker process's CPU time per invocation
(from /proc, as `benchmarks/processes.py` reads it).

How the worker runs a sync function such as ours: each invocation goes to a
`concurrent.futures.ThreadPoolExecutor` (`azure_functions_runtime/handle_event.py`,
`loop.run_in_executor(threadpool, run_sync_func, ...)`) whose `max_workers` is the app setting
`PYTHON_THREADPOOL_THREAD_COUNT`, or `None` when it is unset (`azure_functions_runtime/utils/
threadpool.py`; the older worker for Python 3.9-3.12 does the same, `azure_functions_worker/
dispatcher.py` `_get_sync_tp_max_workers`: "Starting Python 3.9, worker won't be putting a limit on
the max_workers count"). `None` means Python's own default, min(32, CPUs + 4): 5 or 6 threads on an
instance with one or two CPUs. Invocations beyond the thread count wait in the executor's queue, so
the thread count caps what `perInstanceConcurrency` can usefully be.

The harness carries the host's messages as JSON lines over the worker's stdin/stdout instead of
gRPC: that costs CPU in both processes. So the same load is also run against a no-op app (one
function that returns a constant answer) to show the harness's own ceiling and its CPU per
invocation, which bound what the numbers for the real app can mean.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchmarks.fake_directline import started_fake
from benchmarks.inprocess import TOKEN_BODY, TOKEN_HEADERS
from benchmarks.processes import cpu_seconds
from benchmarks.stats import percentile, ratio
from benchmarks.validity import ceiling_rps
from tests.certs import CertFiles, make_certificate
from tests.functions_host.host import RUNTIME_PYTHON, FunctionsHost, worker_environment
from tokens.settings import DEFAULT_CONCURRENCY

SECTION_FLEX = "## 5. Concurrency per instance through Microsoft's worker"
SKIPPED = "skipped: no .venv-py313"
TOKEN_FUNCTION = "directline_token"
# What infra/modules/functionapp.bicep deploys as PYTHON_THREADPOOL_THREAD_COUNT (tests/test_infra.py
# holds the two equal): the app's Direct Line pool keeps a connection for each of these threads.
DEPLOYED_THREADS = DEFAULT_CONCURRENCY
# The larger pool the choice was weighed against (docs/deploy.md, Concurrency per instance).
LARGER_THREADS = 2 * DEPLOYED_THREADS
ROOT = Path(__file__).resolve().parent.parent
NOOP_APP = '''"""A function that does nothing: the harness and the runtime, without the app."""
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="directline/token", methods=["POST"])
def directline_token(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(b'{"token": "-"}', status_code=200, mimetype="application/json")
'''

T = TypeVar("T")
AppSettings = Callable[[str, str, CertFiles], dict[str, str]]


def default_threads() -> int:
    """What ThreadPoolExecutor(max_workers=None) gives a worker on this machine: min(32, CPUs + 4),
    counting the CPUs this process may run on, as Python 3.13's os.process_cpu_count() does."""
    return min(32, len(os.sched_getaffinity(0)) + 4)


@dataclass(frozen=True)
class FlexPlan:
    delays_ms: tuple[float, ...]
    concurrency: tuple[int, ...]
    threads: tuple[int | None, ...]  # PYTHON_THREADPOOL_THREAD_COUNT; None leaves it unset
    warmup_seconds: float
    level_seconds: float  # each level runs at least this long...
    min_invocations: int  # ...and until this many invocations have answered
    ceiling_seconds: float

    @classmethod
    def make(cls, mode: str) -> FlexPlan:
        def by_mode(full: T, quick: T, smoke: T) -> T:
            return {"full": full, "quick": quick, "smoke": smoke}[mode]

        return cls(
            delays_ms=by_mode((20.0, 200.0), (20.0, 200.0), (20.0,)),
            concurrency=by_mode((1, 4, 8, 16, 32, 64), (1, 8, 32, 64), (1, 4)),
            threads=by_mode(
                (DEPLOYED_THREADS, None, LARGER_THREADS), (DEPLOYED_THREADS, None), (DEPLOYED_THREADS,)
            ),
            warmup_seconds=by_mode(1.0, 0.5, 0.0),
            level_seconds=by_mode(5.0, 1.5, 0.1),
            min_invocations=by_mode(40, 15, 2),
            ceiling_seconds=by_mode(5.0, 1.5, 0.1),
        )


@dataclass(frozen=True)
class FlexLevel:
    """N concurrent invocations for a while: what they took, and the CPU each side used."""

    app: str  # "token" (function_app.py) or "no-op"
    delay_ms: float  # the fake's delay; 0 for the no-op app, which calls nothing
    threads: int | None
    concurrency: int
    latencies_ms: tuple[float, ...]
    errors: int
    seconds: float
    worker_cpu_seconds: float
    host_cpu_seconds: float  # this process: the host's side of the harness and the N callers

    @property
    def invocations(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_second(self) -> float:
        return ratio(self.invocations, self.seconds)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def ideal_per_second(self) -> float:
        """N invocations each waiting only for Direct Line: N / delay."""
        return ceiling_rps(self.concurrency, self.delay_ms)

    @property
    def worker_cpu_ms(self) -> float:
        return ratio(self.worker_cpu_seconds * 1000, self.invocations)

    @property
    def host_cpu_ms(self) -> float:
        return ratio(self.host_cpu_seconds * 1000, self.invocations)

    @property
    def worker_busy(self) -> float:
        """The worker's CPU time over the wall time: 1.0 is one CPU kept busy (the GIL's limit)."""
        return ratio(self.worker_cpu_seconds, self.seconds)


@dataclass(frozen=True)
class FlexResult:
    skipped: str | None
    cpus: int
    default_threads: int
    runtime: str = ""
    levels: tuple[FlexLevel, ...] = ()
    ceiling: tuple[FlexLevel, ...] = ()  # the no-op app

    def curve(self, delay_ms: float, threads: int | None) -> tuple[FlexLevel, ...]:
        return tuple(level for level in self.levels if (level.delay_ms, level.threads) == (delay_ms, threads))

    def failures(self) -> list[str]:
        errors = sum(level.errors for level in (*self.levels, *self.ceiling))
        return [f"{errors} invocations through the Functions worker failed"] if errors else []


def skipped_result(why: str) -> FlexResult:
    return FlexResult(skipped=why, cpus=os.cpu_count() or 0, default_threads=default_threads())


def measure_flex(plan: FlexPlan, work: Path, app_settings: AppSettings) -> FlexResult:
    """Every level of the plan, then the no-op app. For each delay, one worker per thread count, all
    started at once (an idle one costs nothing) and taking turns at each N, so that whatever else the
    machine does falls on every thread count alike."""
    if not RUNTIME_PYTHON.exists():
        return skipped_result(f"{SKIPPED} (`bash .ci/python-venv 3.13 requirements-runtime.txt` makes it)")
    work = work / "flex"
    work.mkdir(parents=True, exist_ok=True)
    certs = make_certificate(work)
    secret = "bench-" + secrets.token_urlsafe(24)
    levels: list[FlexLevel] = []
    for delay_ms in plan.delays_ms:
        with started_fake(certs, secret, delay_ms) as fake:
            settings = app_settings(fake.endpoint, secret, certs)
            with contextlib.ExitStack() as stack:
                setups = [_Setup("token", delay_ms, threads) for threads in plan.threads]
                hosts = [stack.enter_context(_worker(ROOT, settings, setup, work)) for setup in setups]
                for host in hosts:  # pools, imports, the pool's threads
                    _run(host, min(plan.concurrency[-1], 8), plan.warmup_seconds)
                workers = list(zip(setups, hosts, strict=True))
                measured = [_level(host, setup, n, plan) for n in plan.concurrency for setup, host in workers]
            # In the plan's order: by thread count, then N.
            levels += sorted(measured, key=lambda level: plan.threads.index(level.threads))
    ceiling = _ceiling(plan, work)
    cpus = os.cpu_count() or 0
    return FlexResult(None, cpus, default_threads(), runtime_versions(), tuple(levels), ceiling)


def _ceiling(plan: FlexPlan, work: Path) -> tuple[FlexLevel, ...]:
    """The harness and the runtime with nothing to do, one at a time and at the plan's highest
    concurrency."""
    app_dir = work / "noop-app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "function_app.py").write_text(NOOP_APP, encoding="utf-8")
    setup = _Setup("no-op", 0.0, max((count for count in plan.threads if count is not None), default=None))
    with _worker(app_dir, {}, setup, work) as host:
        _run(host, plan.concurrency[-1], plan.warmup_seconds)
        return tuple(
            _level(host, setup, concurrency, plan, seconds=plan.ceiling_seconds)
            for concurrency in dict.fromkeys((1, plan.concurrency[-1]))
        )


@dataclass(frozen=True)
class _Setup:
    """One worker: which app, against which delay, with how many threads."""

    app: str
    delay_ms: float
    threads: int | None


@contextlib.contextmanager
def _worker(app_dir: Path, settings: Mapping[str, str], setup: _Setup, work: Path) -> Iterator[FunctionsHost]:
    env = dict(settings)
    if setup.threads is not None:
        env["PYTHON_THREADPOOL_THREAD_COUNT"] = str(setup.threads)
    # The worker keeps bytecode, as a deployed app does (the harness's default turns it off).
    environment = worker_environment(env, app_dir)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    stderr = work / f"worker-{setup.app}-{setup.delay_ms:g}ms-{setup.threads}.log"
    with FunctionsHost.started(app_dir, environment, stderr, keep_logs=False) as host:
        yield host


def _level(
    host: FunctionsHost, setup: _Setup, concurrency: int, plan: FlexPlan, *, seconds: float | None = None
) -> FlexLevel:
    worker_before, host_before = cpu_seconds(host.pid), time.process_time()
    started = time.perf_counter()
    seconds = plan.level_seconds if seconds is None else seconds
    latencies, errors = _run(host, concurrency, seconds, plan.min_invocations)
    elapsed = time.perf_counter() - started
    return FlexLevel(
        setup.app,
        setup.delay_ms,
        setup.threads,
        concurrency,
        tuple(latencies),
        errors,
        elapsed,
        cpu_seconds(host.pid) - worker_before,
        time.process_time() - host_before,
    )


def _run(
    host: FunctionsHost, concurrency: int, seconds: float, min_invocations: int = 0
) -> tuple[list[float], int]:
    """`concurrency` callers, each invoking again as soon as its answer is in, for at least `seconds`
    and until `min_invocations` have answered (every caller makes at least one call, so that a
    level never measures nothing)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def caller() -> None:
        nonlocal errors
        while True:
            started = time.perf_counter()
            try:
                answer = host.invoke_http(TOKEN_FUNCTION, "POST", TOKEN_HEADERS, TOKEN_BODY)
                ok = answer.status == 200 and b'"token"' in answer.body
            except Exception:  # a failed invocation is counted, never raised: it must show in the report
                ok = False
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                errors += not ok
                done = time.perf_counter() >= deadline and len(latencies) >= min_invocations
            if done:
                return

    callers = [threading.Thread(target=caller, name=f"flex-caller-{i}") for i in range(concurrency)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    return latencies, errors


# -- RESULTS.md --------------------------------------------------------------------------------------


def render(result: FlexResult, plan: FlexPlan) -> list[str]:
    lines = [SECTION_FLEX, ""]
    if result.skipped is not None:
        return [*lines, result.skipped, ""]
    lines += [
        "The app's `directline_token` function in Microsoft's Python library worker "
        f"(`azure-functions-runtime`; {result.runtime}), driven by `tests/functions_host` as the "
        "Functions host drives it: N callers each send an HTTP invocation, wait for the answer and "
        "send the next, against the fake Direct Line in its own process. The worker runs sync "
        "functions on a thread pool of `PYTHON_THREADPOOL_THREAD_COUNT` threads (unset: Python's "
        f"default, min(32, CPUs + 4) = {result.default_threads} here); invocations beyond it wait in "
        "the pool's queue. Worker CPU is the worker process's user and system time "
        "(`/proc/<pid>/stat`) during the level, per invocation; 'busy' is that CPU time over the wall "
        "time (1.00 = one CPU, all a GIL-bound worker can use). Host CPU is this process's: the host's "
        "side of the harness and the N callers. One worker per thread count runs for the whole of "
        "each delay, and they take turns at each N. Each level runs for at least "
        f"{plan.level_seconds:g} s and {plan.min_invocations} invocations, after {plan.warmup_seconds:g} s "
        f"of warm-up per worker; {result.cpus} CPUs are shared by the worker, the fake and the callers.",
        "",
    ]
    for delay in sorted({level.delay_ms for level in result.levels}):
        for threads in dict.fromkeys(level.threads for level in result.levels if level.delay_ms == delay):
            lines += _curve(result, delay, threads)
    lines += _ceiling_lines(result)
    return lines


def _threads_label(threads: int | None, result: FlexResult) -> str:
    if threads is None:
        return f"`PYTHON_THREADPOOL_THREAD_COUNT` unset ({result.default_threads} threads here)"
    return f"`PYTHON_THREADPOOL_THREAD_COUNT={threads}`"


def _curve(result: FlexResult, delay: float, threads: int | None) -> list[str]:
    curve = result.curve(delay, threads)
    lines = [
        f"Direct Line (the fake) at {delay:g} ms, {_threads_label(threads, result)}:",
        "",
        "| N | invocations | invocations/s | of N / delay | p50 ms | p99 ms | worker CPU ms/inv. "
        "| worker busy | host CPU ms/inv. | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in curve:
        cells = [
            str(level.concurrency),
            f"{level.invocations:,}",
            f"{level.per_second:.0f}",
            f"{ratio(level.per_second, level.ideal_per_second) * 100:.0f} %",
            *_cost_cells(level),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    knee = knee_of(curve)
    if knee is not None:
        lines += ["", f"- {knee}"]
    return [*lines, ""]


def _cost_cells(level: FlexLevel) -> list[str]:
    """A level's latency, CPU and error cells, as both of the section's tables show them."""
    return [
        f"{level.p50_ms:.1f}",
        f"{level.p99_ms:.1f}",
        f"{level.worker_cpu_ms:.2f}",
        f"{level.worker_busy:.2f}",
        f"{level.host_cpu_ms:.2f}",
        str(level.errors),
    ]


def knee_of(curve: tuple[FlexLevel, ...]) -> str | None:
    """Where more concurrency stops buying throughput: the lowest N within 10 % of the best rate."""
    measured = [level for level in curve if level.per_second > 0]  # nan and 0 measured nothing
    if not measured:
        return None
    best = max(measured, key=lambda level: level.per_second)
    knee = next(level for level in measured if level.per_second >= 0.9 * best.per_second)
    return (
        f"throughput within 10 % of its best ({best.per_second:.0f}/s at N={best.concurrency}) from "
        f"N={knee.concurrency} (p99 {knee.p99_ms:.0f} ms, worker busy {knee.worker_busy:.2f})"
    )


def _ceiling_lines(result: FlexResult) -> list[str]:
    lines = [
        "The harness's own ceiling: the same callers against a no-op app (one function returning a "
        "constant answer, no Direct Line call) in the same worker:",
        "",
        "| N | threads | invocations | invocations/s | p50 ms | p99 ms | worker CPU ms/inv. | worker busy "
        "| host CPU ms/inv. | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in result.ceiling:
        cells = [
            str(level.concurrency),
            str(level.threads if level.threads is not None else result.default_threads),
            f"{level.invocations:,}",
            f"{level.per_second:.0f}",
            *_cost_cells(level),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def runtime_versions() -> str:
    """The worker's Python and azure-functions-runtime, as RESULTS.md names them."""
    done = subprocess.run(
        [str(RUNTIME_PYTHON), "-c", _VERSIONS], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


_VERSIONS = (
    "import platform, importlib.metadata as m; "
    "print(f'Python {platform.python_version()}, '"
    " + 'azure-functions-runtime ' + m.version('azure-functions-runtime'))"
)
