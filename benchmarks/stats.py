"""Percentiles and the few numbers every measurement reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks; nan when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


@dataclass(frozen=True)
class Latencies:
    """Wall-clock latencies of one kind of call, in milliseconds, with client CPU time per call."""

    name: str
    samples_ms: tuple[float, ...]
    cpu_ms: tuple[float, ...] = ()
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.samples_ms)

    def p(self, q: float) -> float:
        return percentile(self.samples_ms, q)

    @property
    def cpu_p50(self) -> float:
        return percentile(self.cpu_ms, 50)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or NaN (printed "nan") when the denominator is 0: a peer that measured
    nothing (a smoke run's, or one that failed) must not end the report with ZeroDivisionError."""
    return numerator / denominator if denominator else math.nan
