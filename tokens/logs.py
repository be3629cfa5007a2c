"""Logging for hosted mode: one line per record on standard error, written by a background thread.

Request threads format their record and put the line on a queue, so that a slow or contended
standard error never holds a request up; `configure()` returns the function that writes out what is
still queued, which the server calls when it stops, so that no audit line is lost. (Under Azure
Functions the host owns logging, and none of this is used.)
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class OneLineFormatter(logging.Formatter):
    """Every record on one line, tracebacks included, so that a log reader (or an attacker's
    newline) can never split or forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", " | ")


class QueuedLines(logging.Handler):
    """Formats on the caller's thread; one writer thread puts the lines on standard error."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(OneLineFormatter(FORMAT))
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.put(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush_and_stop(self) -> None:
        """Write out every line queued so far, then stop the writer."""
        self._lines.put(None)
        self._writer.join(timeout=10)

    def _write(self) -> None:
        stopping = False
        while not stopping:
            lines = [self._lines.get()]
            while not self._lines.empty():  # whatever else is queued goes out in the same write
                lines.append(self._lines.get())
            stopping = None in lines
            sys.stderr.write("".join(line for line in lines if line is not None))
            sys.stderr.flush()


def stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    return handler


def configure() -> Callable[[], None]:
    """Send every record through a queue to standard error; returns the flush-and-stop function."""
    handler = QueuedLines()
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # No format here uses them, and looking them up costs every record a few microseconds.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # waitress logs every queue warning at WARNING; keep its INFO chatter out of the audit stream.
    logging.getLogger("waitress").setLevel(logging.WARNING)
    return handler.flush_and_stop
