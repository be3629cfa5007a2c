"""The circuit breaker for Direct Line (tokens/breaker.py): open after failures in a row, one probe
after a pause, closed again by a success."""

from __future__ import annotations

import logging

import pytest

from tests.fakes import FakeClock
from tokens.breaker import Breaker
from tokens.errors import UpstreamUnavailable


def opened(clock: FakeClock, failures: int = 5) -> Breaker:
    breaker = Breaker(threshold=5, open_seconds=10, max_open_seconds=60, clock=clock)
    for _ in range(failures):
        breaker.before_call()
        breaker.failed()
    return breaker


def refused_for(breaker: Breaker) -> int | None:
    with pytest.raises(UpstreamUnavailable) as refused:
        breaker.before_call()
    return refused.value.retry_after


def test_fewer_failures_than_the_threshold_leave_it_closed() -> None:
    breaker = opened(FakeClock(), failures=4)
    breaker.before_call()
    assert breaker.available


def test_a_success_starts_the_count_again() -> None:
    breaker = opened(FakeClock(), failures=4)
    breaker.succeeded()
    for _ in range(4):
        breaker.failed()
    breaker.before_call()


def test_after_the_threshold_calls_are_refused_at_once_with_retry_after() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    assert not breaker.available
    assert refused_for(breaker) == 10
    clock.advance(7.5)
    assert refused_for(breaker) == 3


def test_after_the_pause_one_probe_goes_through_and_the_others_wait_for_it() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10)
    breaker.before_call()  # the probe
    assert refused_for(breaker) == 1


def test_a_successful_probe_closes_it() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10)
    breaker.before_call()
    breaker.succeeded()
    assert breaker.available
    breaker.before_call()
    breaker.before_call()


def test_a_failed_probe_opens_it_twice_as_long_up_to_a_minute() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    pauses = []
    for _ in range(5):
        clock.advance(60)
        breaker.before_call()
        breaker.failed()
        pauses.append(refused_for(breaker))
    assert pauses == [20, 40, 60, 60, 60]


def test_each_change_of_state_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tokens.breaker")
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10)
    breaker.before_call()
    breaker.succeeded()
    messages = [record.getMessage() for record in caplog.records if record.name == "tokens.breaker"]
    assert [message.split(":")[0] for message in messages] == [
        "Direct Line circuit open", "Direct Line circuit half-open", "Direct Line circuit closed",
    ]


def test_a_guarded_call_ended_by_an_unexpected_exception_releases_the_probe_as_a_failure() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10)
    with pytest.raises(OSError), breaker.guarded():  # the probe, ended by what nobody foresaw
        raise OSError("no CA bundle at that path")
    assert refused_for(breaker) == 20  # open again, twice as long: the probe was released
    clock.advance(20)
    with breaker.guarded() as call:  # the next probe goes through, and succeeds
        call.up = True
    assert breaker.available


def test_a_guarded_call_refused_while_open_counts_as_nothing() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    with pytest.raises(UpstreamUnavailable), breaker.guarded():
        raise AssertionError("not reached: the breaker refuses before the call")
    clock.advance(10)
    with breaker.guarded() as call:
        call.up = True
    assert breaker.available
