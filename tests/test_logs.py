"""Hosted mode's logging (tokens/logs.py): one line per record, written by one writer thread from a
bounded queue, the lines waiting together in one write; nothing queued is lost when the server stops; an audit record is never dropped, and a
request learns when its record could not be written; ordinary lines are dropped, and counted, rather
than piled up without bound."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceFactory, payload, token_request
from tests.fakes import FakeDirectLine
from tokens import audit, logs


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What the log writer put on standard error; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda: capsys.readouterr().err
    root.handlers[:] = handlers
    root.setLevel(level)
    audit.trail_failing.clear()


class FullDisk(io.StringIO):
    """A stream that refuses every write, as /dev/full does, until told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


class StalledReader(io.StringIO):
    """A stream whose reader has stopped reading: a write blocks until `resume` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.resume = threading.Event()

    def write(self, text: str) -> int:
        self.resume.wait(10)
        return super().write(text)


def in_threads(write: Callable[[int], None], count: int) -> None:
    """Runs write(0) ... write(count - 1) on threads of their own, at once, and waits for them."""
    threads = [threading.Thread(target=write, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def record(n: int = 1) -> dict[str, object]:
    return audit.build_record(
        event="directline.token", status=200, user_id=f"dl_{n}", conversation_id=f"c{n}", auth_mode="anonymous",
        origin=None, client_ip=None, reason=None, duration_ms=1.0, invocation_id=None,
    )


def test_every_record_queued_before_the_stop_is_written_once_and_in_order(stderr: Callable[[], str]) -> None:
    finish = logs.configure()
    log = logging.getLogger("tokens.audit")

    def write(thread: int) -> None:
        for n in range(500):
            log.info("thread %d line %d", thread, n)

    in_threads(write, 4)
    finish()
    lines = [line for line in stderr().splitlines() if " tokens.audit " in line]
    assert len(lines) == 2000
    for t in range(4):
        mine = [line for line in lines if f"thread {t} " in line]
        assert [line.rsplit(" ", 1)[1] for line in mine] == [str(n) for n in range(500)]


class CountedWrites(StalledReader):
    """Counts the writes; the first one blocks until `resume` is set, so that lines pile up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_waiting_together_are_written_with_one_write(stderr: Callable[[], str]) -> None:
    stream = CountedWrites()
    finish = logs.configure(stream)
    log = logging.getLogger("tokens.service")
    log.info("first")
    deadline = time.monotonic() + 5
    while stream.writes == 0 and time.monotonic() < deadline:  # until the writer blocks writing it
        time.sleep(0.01)
    for n in range(50):
        log.info("waiting %d", n)
    stream.resume.set()
    assert finish() is True
    assert stream.getvalue().count("\n") == 51
    assert stream.writes == 2


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


# -- audit records are confirmed; ordinary lines are bounded ---------------------------------------


def test_an_audit_record_returns_only_once_it_is_written(stderr: Callable[[], str]) -> None:
    stream = io.StringIO()
    finish = logs.configure(stream)
    audit.emit(record(7))
    assert '"userId":"dl_7"' in stream.getvalue()  # already there when emit returned
    assert finish() is True


def test_an_audit_record_the_stream_refuses_is_reported_to_its_request(stderr: Callable[[], str]) -> None:
    finish = logs.configure(FullDisk())
    with pytest.raises(audit.AuditNotWritten):
        audit.emit(record())
    assert audit.trail_failing.is_set()
    assert finish() is False  # and serve exits 1


def test_the_trail_is_whole_again_once_the_stream_takes_lines(stderr: Callable[[], str]) -> None:
    stream = FullDisk()
    logs.configure(stream)
    with pytest.raises(audit.AuditNotWritten):
        audit.emit(record(1))
    stream.full = False
    audit.emit(record(2))
    assert not audit.trail_failing.is_set()
    assert '"userId":"dl_2"' in stream.getvalue()


def test_while_the_reader_stalls_audit_records_fail_at_once_and_ordinary_lines_are_counted_not_kept(
    stderr: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "AUDIT_WRITE_SECONDS", 0.2)
    monkeypatch.setattr(logs, "MAX_QUEUED", 5)
    stream = StalledReader()
    finish = logs.configure(stream)
    other = logging.getLogger("tokens.service")
    for n in range(100):  # the writer is stuck on the first; five wait; the rest are dropped
        other.warning("line %d", n)
    threading.Event().wait(0.3)
    with pytest.raises(audit.AuditNotWritten):
        audit.emit(record())
    stream.resume.set()
    other.warning("after")
    finish()
    written = stream.getvalue()
    assert "log lines were dropped: the log stream was too slow" in written
    assert written.count(" tokens.service ") < 10  # bounded, not a hundred held in memory
    assert "after" in written


# -- a real pipe: audit records written on their own thread when that cannot block ------------------


@pytest.fixture
def pipe() -> Iterator[tuple[int, Any]]:
    """A pipe whose write end is the log stream (as standard error is a pipe under a container
    runtime or a log collector); the read end for the test to read, or not."""
    reader, writer = os.pipe()
    stream = os.fdopen(writer, "w", encoding="utf-8")
    yield reader, stream
    os.close(reader)  # first: a writer blocked on a full pipe then fails instead of hanging the close
    with contextlib.suppress(OSError):
        stream.close()


def test_through_a_pipe_every_thread_s_lines_arrive_whole_and_in_order(
    stderr: Callable[[], str], pipe: tuple[int, Any]
) -> None:
    """Audit records go straight to a pipe with room, ordinary lines through the writer thread:
    neither may overtake the other within a thread, nor split another's line."""
    reader, stream = pipe
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(reader, 65536), b"")))
    drain.start()
    finish = logs.configure(stream)
    log = logging.getLogger("tokens.service")
    failed_before = audit.not_written()  # the process's count: earlier tests failed some on purpose

    def write(thread: int) -> None:
        for n in range(200):
            if n % 2:
                audit.emit(record((thread + 1) * 1000 + n))  # userId dl_1001 is thread 0's line 1
            else:
                log.info("thread %d line %d", thread, n)

    in_threads(write, 4)
    finish()
    assert audit.not_written() == failed_before
    stream.close()
    drain.join(10)
    seen: dict[int, list[int]] = {t: [] for t in range(4)}
    for line in b"".join(chunks).decode().splitlines():
        message = line.split(" ", 4)[4]  # after the date, time, level and logger name
        if message.startswith("{"):
            number = int(json.loads(message)["userId"].removeprefix("dl_"))
            seen[number // 1000 - 1].append(number % 1000)
        else:
            _, writer, _, n = message.split(" ")  # "thread 0 line 2"
            seen[int(writer)].append(int(n))
    assert seen == {t: list(range(200)) for t in range(4)}


def test_with_a_full_pipe_an_audit_record_fails_by_the_deadline_instead_of_blocking(
    stderr: Callable[[], str], pipe: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody reads the pipe: once it is full, a request must not hang in a write of its own."""
    monkeypatch.setattr(audit, "AUDIT_WRITE_SECONDS", 0.3)
    _, stream = pipe
    os.set_blocking(stream.fileno(), False)
    with contextlib.suppress(BlockingIOError):
        while True:  # fill it
            os.write(stream.fileno(), b"x" * 65536)
    os.set_blocking(stream.fileno(), True)
    logs.configure(stream)
    started = time.monotonic()
    with pytest.raises(audit.AuditNotWritten):
        audit.emit(record())
    assert time.monotonic() - started < 5


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_record_refused_while_the_disk_was_full_never_appears_once_there_is_room(
    stderr: Callable[[], str], tmp_path: Path
) -> None:
    """Its request answered 500 with no token: written later, the record would say it was issued."""
    descriptor = os.open("/dev/full", os.O_WRONLY)
    stream = os.fdopen(descriptor, "w", encoding="utf-8")
    finish = logs.configure(stream)
    with pytest.raises(audit.AuditNotWritten):
        audit.emit(record(1))
    log_file = tmp_path / "log"
    room = os.open(log_file, os.O_WRONLY | os.O_CREAT)
    os.dup2(room, descriptor)  # the disk has room again, under the same descriptor
    os.close(room)
    audit.emit(record(2))
    logging.getLogger("tokens.service").info("an ordinary line")
    finish()
    stream.close()
    written = log_file.read_text()
    assert '"userId":"dl_2"' in written
    assert "an ordinary line" in written
    assert '"userId":"dl_1"' not in written


def test_a_batch_goes_to_the_stream_in_pieces_a_pipe_takes_whole() -> None:
    """Several worker processes share standard error: a write of more than PIPE_BUF bytes to a
    pipe may be interleaved with another process's, and a line cut in two is no record."""
    lines = b"".join(b"%d %s\n" % (n, b"x" * (n * 37 % 900)) for n in range(300))
    pieces = list(logs._pieces(lines))
    assert b"".join(pieces) == lines
    assert all(len(piece) <= logs.PIPE_BUF and piece.endswith(b"\n") for piece in pieces)
    assert len(pieces) < 300 / 2  # still many lines to a write
    long_line = b"y" * (logs.PIPE_BUF * 2) + b"\n"
    assert list(logs._pieces(b"a\n" + long_line + b"b\n")) == [b"a\n", long_line, b"b\n"]


def test_an_audit_record_outside_a_confirming_log_is_simply_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Under the Functions host (or a test's capture) the host owns the log: nothing waits."""
    caplog.set_level(logging.INFO)
    audit.emit(record(3))
    assert any('"userId":"dl_3"' in line.getMessage() for line in caplog.records)


def test_a_token_whose_audit_record_cannot_be_written_is_not_issued(
    stderr: Callable[[], str], make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service()
    logs.configure(FullDisk())
    response = service.issue_token(token_request({}))
    assert (response.status, payload(response)["error"]["code"]) == (500, "misconfigured")
    assert "token" not in payload(response)
    assert "audit trail" in payload(response)["error"]["message"]
    health = service.health(token_request(method="GET"))
    assert (health.status, payload(health)["status"], payload(health)["auditLog"]) == (503, "failing", "not written")
