"""What one benchmark run measures (the plan) and what it measured, as plain data for the report."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TypeVar

from benchmarks.coldstart import ColdStartResult
from benchmarks.flex import FlexPlan, FlexResult
from benchmarks.inprocess import OverheadResult
from benchmarks.load import LoadResult
from benchmarks.stats import ratio
from benchmarks.validity import Verdict, judge, share_of_ceiling

# RESULTS.md's headings, in order (tests/test_benchmarks.py spells them out too).
SECTION_TARGETS = "## Targets"
SECTION_VALIDITY = "## Validity: did the servers set the pace?"
SECTION_OVERHEAD = "## 1. Proxy overhead, in process"
SECTION_THROUGHPUT = "## 2. Throughput and latency: `serve` and the Node peer"
SECTION_COLD = "## 3. Cold start"
SECTION_MEMORY = "## 4. Memory"
SECTION_PROFILE = "## Profile of the app's token function"

T = TypeVar("T")


def serve_shape(concurrency: int, workers: int | None = None) -> tuple[int, int]:
    """serve as tuned for throughput (docs/hosted-mode.md): a process per CPU and one more (unless
    told), and a thread for every caller of `concurrency` among them; (workers, threads)."""
    workers = workers or (os.cpu_count() or 1) + 1
    return workers, -(-concurrency // workers)


@dataclass(frozen=True)
class Plan:
    mode: str  # "full", "quick" or "smoke"
    delay_ms: float
    overhead_samples: int
    overhead_warmup: int
    profile_samples: int
    concurrency: tuple[int, ...]
    load_seconds: float  # per server and level, in all
    load_turns: int  # the servers take turns this many times at each level, load_seconds / turns each
    warmup_seconds: float  # 0: no warm-up, the first level pays for starting up
    python_load_only: bool  # the Python load generator even where wrk is installed
    serve_workers: int
    serve_threads: int
    memory_checkpoints: tuple[int, ...]
    memory_concurrency: int
    settle_seconds: float  # pause before reading VmRSS, so the last answers' buffers are gone
    cold_runs: int
    cold_untimed_runs: int
    import_profile_runs: int
    flex: FlexPlan

    @classmethod
    def make(cls, mode: str, *, delay_ms: float) -> Plan:
        def by_mode(full: T, quick: T, smoke: T) -> T:
            return {"full": full, "quick": quick, "smoke": smoke}[mode]

        concurrency = by_mode((1, 8, 32, 64), (1, 8, 32, 64), (1, 64))
        workers, threads = serve_shape(max(concurrency))
        return cls(
            mode=mode,
            delay_ms=delay_ms,
            overhead_samples=by_mode(600, 40, 1),
            overhead_warmup=by_mode(10, 10, 0),
            profile_samples=by_mode(300, 20, 1),
            concurrency=concurrency,
            load_seconds=by_mode(12.0, 2.0, 0.02),
            # Several short turns rather than one long one each: this machine's speed drifts from one
            # minute to the next, and the drift then falls on both servers alike.
            load_turns=by_mode(4, 1, 1),
            warmup_seconds=by_mode(2.0, 1.0, 0.0),
            python_load_only=by_mode(False, False, True),
            serve_workers=workers,
            serve_threads=threads,
            memory_checkpoints=by_mode((100, 1_000, 5_000, 10_000, 15_000, 20_000), (100, 1_000), (25, 50)),
            memory_concurrency=8,
            settle_seconds=by_mode(0.2, 0.2, 0.01),
            cold_runs=by_mode(20, 5, 1),
            # The untimed run writes the .pyc files; a smoke run only shows that the code runs.
            cold_untimed_runs=by_mode(1, 1, 0),
            import_profile_runs=by_mode(5, 1, 1),
            flex=FlexPlan.make(mode),
        )


@dataclass(frozen=True)
class Level:
    """One server at one concurrency: what the load generator saw, the CPU the server used, and the
    CPU the fake Direct Line used meanwhile (taken from the same two CPUs)."""

    load: LoadResult
    server_cpu_seconds: float
    fake_cpu_seconds: float = math.nan

    @property
    def cpu_ms_per_request(self) -> float:
        return ratio(self.server_cpu_seconds * 1000, self.load.requests)

    @property
    def fake_cpu_ms_per_request(self) -> float:
        return ratio(self.fake_cpu_seconds * 1000, self.load.requests)

    def share(self, delay_ms: float) -> float:
        """Requests/s as a share of the c / delay ceiling."""
        return share_of_ceiling(self.load.rps, self.load.concurrency, delay_ms)


@dataclass(frozen=True)
class ThroughputResult:
    workers: int
    threads: int
    serve: tuple[Level, ...]
    node: tuple[Level, ...]
    fake: Level  # the fake Direct Line alone, the load generator straight at it, highest concurrency

    def at(self, concurrency: int) -> tuple[Level, Level]:
        """(serve, Node peer) at this concurrency."""
        serve = next(level for level in self.serve if level.load.concurrency == concurrency)
        node = next(level for level in self.node if level.load.concurrency == concurrency)
        return serve, node


@dataclass(frozen=True)
class MemoryResult:
    concurrency: int
    checkpoints: tuple[tuple[int, int], ...]  # (requests answered so far, VmRSS in KiB)
    errors: int
    audit_lines: int  # counted after the server stopped and flushed its log queue

    @property
    def answered(self) -> int:
        return self.checkpoints[-1][0]

    @property
    def growth(self) -> float:
        """Relative change of VmRSS from the first checkpoint to the last."""
        first, last = self.checkpoints[0][1], self.checkpoints[-1][1]
        return ratio(last - first, first)


@dataclass(frozen=True)
class Machine:
    python: str
    node: str
    cpus: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    started: str
    seconds: float


@dataclass(frozen=True)
class Results:
    plan: Plan
    machine: Machine
    overhead: OverheadResult
    throughput: ThroughputResult
    cold_start: ColdStartResult
    memory: MemoryResult
    profile_text: str
    flex: FlexResult

    @property
    def validity(self) -> Verdict:
        node = [(level.load.concurrency, level.load.rps) for level in self.throughput.node]
        fake = self.throughput.fake.load
        return judge(self.plan.mode, self.plan.delay_ms, node, (fake.concurrency, fake.rps))

    def failures(self) -> list[str]:
        """What makes this run no measurement: failed calls (fast calls skew every latency), audit
        lines lost, and a fake-bound throughput run (see benchmarks/validity.py)."""
        overhead = self.overhead
        levels = (*self.throughput.serve, *self.throughput.node, self.throughput.fake)
        counts = {
            "in-process calls": sum(
                calls.errors for calls in (overhead.app, overhead.naive, overhead.floor, overhead.raw)
            ),
            "load requests": sum(level.load.errors for level in levels),
            "cold-start first tokens": self.cold_start.errors,
            "memory requests": self.memory.errors,
        }
        failures = [f"{count} {what} failed" for what, count in counts.items() if count]
        failures += self.flex.failures()
        if self.memory.audit_lines != self.memory.answered:
            failures.append(
                f"{self.memory.audit_lines} audit lines for {self.memory.answered} requests answered"
            )
        if self.validity.fake_bound:
            failures.append(self.validity.reason)
        return failures
