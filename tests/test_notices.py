"""An operator's notice is written at most once a minute, however often its condition recurs."""

from __future__ import annotations

import logging

import pytest

from tests.fakes import FakeClock
from tokens.notices import Notice


def test_a_notice_is_written_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    notice = Notice(logging.getLogger("tests.notice"), logging.ERROR, clock=clock)
    for _ in range(5):
        notice.write("the %s is wrong", "region")
    clock.advance(59.9)
    notice.write("the %s is wrong", "region")
    clock.advance(0.1)
    notice.write("the %s is wrong", "region")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tests.notice"]
    assert lines == [(logging.ERROR, "the region is wrong")] * 2
