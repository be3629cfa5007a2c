"""Logging for hosted mode: one line per record on standard error, formatted by the thread that logs
it and put on a bounded queue that one writer thread empties, so that a slow or contended standard
error never holds a request up. The writer takes every line waiting at once and writes them with one
write and one flush: under load the lines of many requests share a system call. An audit record is
written by its own request's thread instead when that cannot block (`_Writer.write_now`). (Under
Azure Functions the host owns logging, and none of this is used.)

The queue is bounded. An ordinary line that finds it full is dropped and counted, and the count is
written once the stream takes lines again. An audit record is never dropped: the request that made
it waits until its line has been written to the stream (AUDIT_WRITE_SECONDS at most), and when it
could not be (the stream fails, as on a full disk or /dev/full, or its reader stalls), the request
gets no token (tokens/audit.py, tokens/service.py): an audit trail that silently stops is the one
outcome this service does not allow. Meanwhile health answers 503, and `serve` exits with status 1.

`configure()` returns the function that writes out what is still queued (within a bounded time) and
says whether every audit record reached the stream; the server calls it when it stops.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

from tokens import audit

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MAX_QUEUED = 10_000  # lines; each about 300 bytes
MAX_BATCH = 256  # lines written with one write and one flush
ROOM_POLL_SECONDS = 0.01  # how often an audit record that found the queue full looks again
# A pipe takes a write of up to PIPE_BUF bytes whole (POSIX: at least 512; 4096 on Linux), and one
# that polls writable takes it without blocking.
if sys.platform == "win32":
    PIPE_BUF = 4096
else:
    PIPE_BUF = select.PIPE_BUF
# A line written on its own thread is at most this long: at most 4 bytes a character, under PIPE_BUF.
DIRECT_MAX_CHARS = (PIPE_BUF - 1) // 4
STOP_SECONDS = 10.0  # for the last lines to be written when the server stops


class OneLineFormatter(logging.Formatter):
    """Every record on one line, tracebacks included, so that a log reader (or an attacker's
    newline) can never split or forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", " | ")


class Line(NamedTuple):
    """A formatted log line on its way to the stream, with its audit record's confirmation."""

    text: str
    confirmation: audit.Confirmation | None


class _Writer:
    """Writes lines, already formatted, and flushes; settles each audit record's confirmation with
    what happened. One write at a time (`lock`), whichever thread makes it, so that lines stay whole
    and in order."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._descriptor = _descriptor(stream)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self.lock = threading.Lock()
        self.writing_since: float | None = None  # set while a write is under way: a stalled reader
        self.dropped = 0  # ordinary lines that found the queue full, not yet reported
        self._dropped_lock = threading.Lock()
        self.pending = 0  # lines queued, or taken by the writer thread, and not written yet
        self._pending_lock = threading.Lock()
        self._ready = None if self._descriptor is None else _readiness(self._descriptor)

    def queued(self) -> None:
        with self._pending_lock:
            self.pending += 1

    def write_now(self, line: str) -> bool | None:
        """Write one line on the calling thread, when that cannot block: nothing queued ahead of
        it, no other write under way, and the stream ready to take a short write at once (a pipe
        with room; a file). True when written, False when the stream refused it, None when not
        tried (then queue it).

        This spares a request two hand-offs between threads (to the writer and back), which cost
        a fifth of serve's throughput; the writer thread stays for everything else, and for a
        stream that would block, whose requests then fail after AUDIT_WRITE_SECONDS as before."""
        if self._ready is None or len(line) > DIRECT_MAX_CHARS:
            return None
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if self.pending or self.dropped or not self._ready():
                return None
            try:
                self._put(line + "\n")
            except Exception:
                audit.trail_failing.set()
                return False
            audit.trail_failing.clear()
            return True
        finally:
            self.lock.release()

    def write(self, queued: list[Line]) -> None:
        with self.lock:
            self._write(queued)
        with self._pending_lock:
            self.pending -= len(queued)

    def _write(self, queued: list[Line]) -> None:
        lines = [self._dropped_note()]
        confirmations: list[audit.Confirmation] = []
        for line, confirmation in queued:
            if confirmation is not None:
                if not confirmation.claim():
                    continue  # its request gave up waiting and issued nothing: the record would be untrue
                confirmations.append(confirmation)
            lines.append(line + "\n")
        self.writing_since = time.monotonic()
        try:
            self._put("".join(lines))
        except Exception:
            audit.trail_failing.set()
            for confirmation in confirmations:
                confirmation.settle(written=False)
            return
        finally:
            self.writing_since = None
        audit.trail_failing.clear()
        for confirmation in confirmations:
            confirmation.settle(written=True)

    def _put(self, text: str) -> None:
        """Write and flush. Where the stream has a descriptor (POSIX), straight to it: a write
        that fails then leaves nothing in the stream's buffer to go out with a later line (a
        record whose request was refused must never appear afterwards, as if issued), and the
        lines go in pieces of at most PIPE_BUF bytes, cut between lines, which a pipe shared by
        several worker processes takes whole, never interleaved with another's."""
        if self._descriptor is None:
            self.stream.write(text)
            self.stream.flush()
            return
        for piece in _pieces(text.encode(self._encoding, "backslashreplace")):
            unwritten = memoryview(piece)
            while unwritten:
                unwritten = unwritten[os.write(self._descriptor, unwritten) :]

    def count_dropped(self) -> None:
        with self._dropped_lock:
            self.dropped += 1

    def _dropped_note(self) -> str:
        with self._dropped_lock:
            dropped, self.dropped = self.dropped, 0
        if not dropped:
            return ""
        note = logging.makeLogRecord({
            "name": "tokens.logs", "levelno": logging.WARNING, "levelname": "WARNING",
            "msg": f"{dropped} log lines were dropped: the log stream was too slow",
        })
        return OneLineFormatter(FORMAT).format(note) + "\n"


class _Enqueue(logging.Handler):
    """Formats each record on the thread that logs it and puts the line on the queue: an ordinary
    line that finds MAX_QUEUED lines waiting is dropped (and counted), an audit record waits for room
    (and its request for the write). (The standard library's QueueHandler does the same with a copy
    of the whole record, and importing it brings pickle along: a few milliseconds of every start.)

    The queue is a SimpleQueue, whose put and get are C: queue.Queue's Conditions, in Python, cost
    every request about a tenth of serve's CPU to hand its audit line to the writer."""

    def __init__(self, lines: queue.SimpleQueue[Line | None], writer: _Writer) -> None:
        super().__init__()
        self._lines = lines
        self.writer = writer
        self.setFormatter(OneLineFormatter(FORMAT))

    def handle(self, record: logging.LogRecord) -> Any:
        # No handler lock around emit, as logging.Handler takes: the queue is safe on any thread.
        # (This handler has no filters of its own.)
        self.emit(record)
        return record

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        confirmation: audit.Confirmation | None = getattr(record, "confirmation", None)
        if confirmation is None:
            if self._lines.qsize() < MAX_QUEUED:
                self.writer.queued()
                self._lines.put(Line(line, None))
            else:
                self.writer.count_dropped()
            return
        confirmation.awaited = True
        written = self.writer.write_now(line)
        if written is not None:
            confirmation.settle(written=written)
            return
        since = self.writer.writing_since
        if since is not None and time.monotonic() - since > audit.AUDIT_WRITE_SECONDS:
            confirmation.settle(written=False)  # the stream's reader has stalled: fail at once
            return
        deadline = time.monotonic() + audit.AUDIT_WRITE_SECONDS
        while self._lines.qsize() >= MAX_QUEUED:  # rare: the stream is far behind
            if time.monotonic() >= deadline:
                confirmation.settle(written=False)
                return
            time.sleep(ROOM_POLL_SECONDS)
        self.writer.queued()
        self._lines.put(Line(line, confirmation))


class _Listener:
    """The writer's thread: waits for a line, then takes every line queued behind it (MAX_BATCH at
    most) and writes them together."""

    def __init__(self, lines: queue.SimpleQueue[Line | None], writer: _Writer) -> None:
        self._lines = lines
        self._writer = writer
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._lines.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            lines = [line for line in batch if line is not None]
            if lines:
                self._writer.write(lines)
            if len(lines) < len(batch):  # the stop: everything queued before it is written
                return

    def stop_within(self, seconds: float) -> bool:
        """Write out what is queued, for `seconds` at most; False if the writer did not finish."""
        self._lines.put(None)
        self._thread.join(seconds)
        return not self._thread.is_alive()


def _descriptor(stream: IO[str]) -> int | None:
    """The stream's file descriptor, to write to directly; None for a stream with none (a
    test's) and on Windows, where the console wants its own stream's writes and poll() exists
    for sockets only."""
    if sys.platform == "win32":
        return None
    else:  # each platform its own branch, for the type checker
        try:
            return stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None


def _readiness(descriptor: int) -> Callable[[], bool]:
    """Whether the descriptor takes a short write at once, asked without waiting."""
    if sys.platform == "win32":
        raise NotImplementedError  # never asked: _descriptor is None there
    else:  # each platform its own branch, for the type checker
        poller = select.poll()
        poller.register(descriptor, select.POLLOUT)

        def ready() -> bool:
            return any(events & select.POLLOUT for _, events in poller.poll(0))

        return ready


def _pieces(data: bytes) -> Iterator[bytes]:
    """`data` in pieces of at most PIPE_BUF bytes, each ending at the end of a line; a longer line
    is a piece by itself."""
    start = 0
    while len(data) - start > PIPE_BUF:
        end = data.rfind(b"\n", start, start + PIPE_BUF) + 1
        if end <= start:  # no line ends within PIPE_BUF: this line goes whole, as it can
            end = data.find(b"\n", start + PIPE_BUF) + 1 or len(data)
        yield data[start:end]
        start = end
    if start < len(data):
        yield data[start:]


def stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    return handler


def configure(stream: IO[str] | None = None) -> Callable[[], bool]:
    """Send every record through the bounded queue to `stream` (standard error); returns the
    function that writes out what is left and says whether every audit record was written."""
    lines: queue.SimpleQueue[Line | None] = queue.SimpleQueue()
    writer = _Writer(stream or sys.stderr)
    listener = _Listener(lines, writer)
    logging.basicConfig(level=logging.INFO, handlers=[_Enqueue(lines, writer)], force=True)
    # No format here uses them, and looking them up costs every record a few microseconds.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # waitress logs every queue warning at WARNING; keep its INFO chatter out of the audit stream.
    logging.getLogger("waitress").setLevel(logging.WARNING)
    # ...except "Task queue depth is N", which it logs for every request that finds all threads
    # busy: at full load a line per request, a tenth of the server's CPU. The server says it once a
    # minute instead (tokens/server.py).
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    listener.start()

    def finish() -> bool:
        flushed = listener.stop_within(STOP_SECONDS)
        return flushed and audit.not_written() == 0

    return finish
