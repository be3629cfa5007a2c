"""Whether a throughput run measured the servers, or the fake Direct Line (and the machine) instead.

Every token request waits `delay` on the fake, so `c` connections can carry at most c / delay
requests per second: the ceiling (64 / 0.020 s = 3,200 requests/s). A proxy that adds little reaches
most of it. The Node peer is the yardstick: it is a minimal proxy, so when it stays under 85 % of the
ceiling at any concurrency up to 64, something other than the servers set the pace (the fake, the
load generator, or other work on the machine's CPUs), and a ratio of `serve` to the peer from that
run says nothing about `serve`. Such a run is *fake-bound*: its numbers are shown, not used.

Above 64 connections the ceiling outruns what two CPUs can do for any proxy, so those levels are not
judged. A smoke run is too short to judge at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from benchmarks.stats import ratio

VALID_SHARE = 0.85
JUDGED_UP_TO = 64


class State(Enum):
    VALID = "valid"
    FAKE_BOUND = "fake-bound"
    NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class Verdict:
    state: State
    label: str  # "valid", "fake-bound", "not judged (smoke)"...
    why: str
    shortfalls: tuple[tuple[int, float], ...] = ()  # (concurrency, the Node peer's share) under the bar

    @property
    def reason(self) -> str:
        """One sentence, for the report and the command line."""
        return f"{self.label}: {self.why}"

    @property
    def valid(self) -> bool:
        return self.state is State.VALID

    @property
    def fake_bound(self) -> bool:
        return self.state is State.FAKE_BOUND


def ceiling_rps(concurrency: int, delay_ms: float) -> float:
    """The most requests per second `concurrency` connections can carry through a fake that holds
    each request `delay_ms` (NaN without a delay: there is no ceiling)."""
    return ratio(concurrency * 1000.0, delay_ms)


def share_of_ceiling(rps: float, concurrency: int, delay_ms: float) -> float:
    return ratio(rps, ceiling_rps(concurrency, delay_ms))


def judge(
    mode: str,
    delay_ms: float,
    node_levels: Sequence[tuple[int, float]],
    fake_alone: tuple[int, float] | None = None,
) -> Verdict:
    """The verdict on a run from the Node peer's (concurrency, requests/s) at each level; the fake's
    own (concurrency, requests/s), when measured, says which of the usual suspects set the pace."""
    if mode == "smoke":
        return Verdict(State.NOT_JUDGED, "not judged (smoke)", "a smoke run is too short to measure anything")
    if not delay_ms > 0:
        return Verdict(State.NOT_JUDGED, "not judged", "the fake has no delay, so there is no ceiling")
    judged = [(c, share_of_ceiling(rps, c, delay_ms)) for c, rps in node_levels if c <= JUDGED_UP_TO]
    if not judged:
        return Verdict(State.NOT_JUDGED, "not judged", f"no level at c <= {JUDGED_UP_TO}")
    bar = percent(VALID_SHARE)
    # NaN (a level that measured nothing) counts as a shortfall, never as a pass.
    short = tuple((c, share) for c, share in judged if not share >= VALID_SHARE)
    if short:
        levels = ", ".join(f"{percent(share)} at c={c}" for c, share in short)
        return Verdict(
            State.FAKE_BOUND,
            "fake-bound",
            f"the Node peer stayed under {bar} of the c / delay ceiling ({levels}; {bar} needed at every "
            f"c <= {JUDGED_UP_TO}), so {_cause(delay_ms, fake_alone)}",
            short,
        )
    lowest = min(share for _, share in judged)
    return Verdict(
        State.VALID,
        "valid",
        f"the Node peer reached at least {percent(lowest)} of the c / delay ceiling at every "
        f"c <= {JUDGED_UP_TO} ({bar} needed)",
    )


def _cause(delay_ms: float, fake_alone: tuple[int, float] | None) -> str:
    """Who set the pace instead of the servers, as far as the fake's own measurement tells."""
    if fake_alone is None:
        return (
            "the fake Direct Line, the load generator or other work on the machine set the pace, not "
            "the servers"
        )
    c, rps = fake_alone
    share = share_of_ceiling(rps, c, delay_ms)
    if share >= VALID_SHARE:
        return (
            f"the machine set the pace, not the servers: the fake alone carried {percent(share)} at c={c}, "
            "so the load generator and other work on the CPUs took what the servers needed"
        )
    return (
        f"the fake Direct Line set the pace (alone it carried only {percent(share)} at c={c}), or the "
        "machine under it, not the servers"
    )


def percent(share: float) -> str:
    """One decimal, so that 84.8 % is never shown as the 85 % it fell short of."""
    return "nan %" if math.isnan(share) else f"{share * 100:.1f} %".replace(".0 %", " %")
