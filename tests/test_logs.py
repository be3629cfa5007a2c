"""Hosted mode's logging (tokens/logs.py): one line per record, written by a background thread, and
nothing queued is lost when the server stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from tokens import logs


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What the log writer put on standard error; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda: capsys.readouterr().err
    root.handlers[:] = handlers
    root.setLevel(level)


def test_every_record_queued_before_the_stop_is_written_once_and_in_order(stderr: Callable[[], str]) -> None:
    finish = logs.configure()
    log = logging.getLogger("tokens.audit")

    def write(thread: int) -> None:
        for n in range(500):
            log.info("thread %d line %d", thread, n)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finish()
    lines = [line for line in stderr().splitlines() if " tokens.audit " in line]
    assert len(lines) == 2000
    for t in range(4):
        mine = [line for line in lines if f"thread {t} " in line]
        assert [line.rsplit(" ", 1)[1] for line in mine] == [str(n) for n in range(500)]


def test_a_record_with_newlines_and_a_traceback_stays_one_line(stderr: Callable[[], str]) -> None:
    finish = logs.configure()
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        logging.getLogger("tokens.service").exception("failed\r\nINFO tokens.audit {forged}")
    finish()
    lines = stderr().splitlines()
    assert len(lines) == 1
    assert lines[0].split(" ", 4)[3] == "tokens.service"  # the forged "record" is inside this one
    assert "Traceback" in lines[0] and "ValueError: first | second" in lines[0]


def test_waitress_chatter_below_warning_is_kept_out(stderr: Callable[[], str]) -> None:
    finish = logs.configure()
    logging.getLogger("waitress").info("Serving on http://127.0.0.1:7071")
    logging.getLogger("waitress").warning("Task queue depth is 5")
    finish()
    written = stderr()
    assert "Serving on" not in written
    assert "Task queue depth" in written
