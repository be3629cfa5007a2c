"""What one benchmark run measured, as plain data for the report."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.coldstart import ColdStartResult
from benchmarks.inprocess import OverheadResult
from benchmarks.load import LoadResult

# The four measurements' headings in RESULTS.md (the quick test looks for each).
SECTION_OVERHEAD = "## 1. Proxy overhead, in process"
SECTION_THROUGHPUT = "## 2. Throughput and latency through `serve`"
SECTION_COLD = "## 3. Cold start"
SECTION_MEMORY = "## 4. Memory"
SECTIONS = (SECTION_OVERHEAD, SECTION_THROUGHPUT, SECTION_COLD, SECTION_MEMORY)


@dataclass(frozen=True)
class Plan:
    quick: bool
    delay_ms: float
    overhead_samples: int
    profile_samples: int
    concurrency: tuple[int, ...]
    load_seconds: float
    serve_threads: int
    memory_checkpoints: tuple[int, ...]
    memory_concurrency: int
    cold_runs: int
    import_profile_runs: int

    @classmethod
    def make(cls, *, quick: bool, delay_ms: float) -> Plan:
        return cls(
            quick=quick,
            delay_ms=delay_ms,
            overhead_samples=40 if quick else 600,
            profile_samples=20 if quick else 300,
            concurrency=(1, 8, 32, 64),
            load_seconds=2 if quick else 10,
            # As many as the app's upstream pool keeps connections (tokens.directline.new_session).
            serve_threads=32,
            memory_checkpoints=(100, 1_000) if quick else (100, 1_000, 5_000, 10_000, 15_000, 20_000),
            memory_concurrency=8,
            cold_runs=5 if quick else 20,
            import_profile_runs=1 if quick else 5,
        )


@dataclass(frozen=True)
class ThroughputResult:
    threads: int
    loads: tuple[LoadResult, ...]


@dataclass(frozen=True)
class MemoryResult:
    concurrency: int
    checkpoints: tuple[tuple[int, int], ...]  # (requests answered so far, VmRSS in KiB)
    errors: int
    audit_lines: int

    @property
    def growth(self) -> float:
        """Relative change of VmRSS from the first checkpoint to the last."""
        first, last = self.checkpoints[0][1], self.checkpoints[-1][1]
        return (last - first) / first


@dataclass(frozen=True)
class Machine:
    python: str
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

    @property
    def errors(self) -> int:
        """Failed calls across every measurement."""
        overhead = self.overhead
        return (
            sum(calls.errors for calls in (overhead.app, overhead.naive, overhead.floor, overhead.raw))
            + sum(load.errors for load in self.throughput.loads)
            + self.cold_start.errors
            + self.memory.errors
        )
