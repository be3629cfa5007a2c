"""Logging for hosted mode: one line per record on standard error, written by a background thread.

Request threads only put records on a queue, so that a slow or contended standard error never holds
a request up; `configure()` returns the function that writes out what is still queued, which the
server calls when it stops, so that no audit line is lost. (Under Azure Functions the host owns
logging, and none of this is used.)
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable


class OneLineFormatter(logging.Formatter):
    """Every record on one line, tracebacks included, so that a log reader (or an attacker's
    newline) can never split or forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", " | ")


def stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    return handler


def configure() -> Callable[[], None]:
    """Route every record through a queue to standard error; returns the flush-and-stop function."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, stderr_handler())
    enqueue = logging.handlers.QueueHandler(records)
    # The queue carries the bare message (a traceback included); the listener's handler adds the rest.
    enqueue.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[enqueue], force=True)
    # waitress logs every queue warning at WARNING; keep its INFO chatter out of the audit stream.
    logging.getLogger("waitress").setLevel(logging.WARNING)
    listener.start()
    return listener.stop
