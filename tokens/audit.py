"""The audit trail: exactly one JSON line per POST to the token, refresh, resume and speech routes.

`build_record` is pure and tested directly; `emit` writes the line on the `tokens.audit` logger.
Only the fields below are ever recorded: no token, secret, handle, JWT or Authorization header.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from tokens.text import one_line

AUDIT_LOGGER = "tokens.audit"
# How long a request waits for its audit line to be written where the log confirms writes (hosted
# mode, tokens/logs.py) before it gives up and issues nothing.
AUDIT_WRITE_SECONDS = 5.0
# Set while audit lines cannot be written (health answers 503), cleared by the next line written.
trail_failing = threading.Event()
MAX_STRING = 256
EVENTS = ("directline.token", "directline.refresh", "directline.resume", "speech.token")

log = logging.getLogger(AUDIT_LOGGER)


def sanitize(value: str) -> str:
    """Drop control characters (newlines, ANSI escapes, bidi marks) and odd spaces (tokens/text.py),
    then cap the length, so that a caller cannot forge or hide audit lines."""
    return one_line(value)[:MAX_STRING]


def outcome_for(status: int) -> str:
    if status < 400:
        return "issued"
    return "denied" if status < 500 else "failed"


def build_record(
    *,
    event: str,
    status: int,
    user_id: str | None,
    conversation_id: str | None,
    auth_mode: str,
    origin: str | None,
    client_ip: str | None,
    reason: str | None,
    duration_ms: float,
    invocation_id: str | None,
    by_secondary: bool = False,
) -> dict[str, Any]:
    """The record; `by_secondary` when DIRECT_LINE_SECRET_SECONDARY served the call, which adds
    `"secretSlot": "secondary"` (left out otherwise, so the usual record keeps its shape)."""
    record: dict[str, Any] = {
        "event": event,
        "outcome": outcome_for(status),
        "status": status,
        "userId": user_id,
        "conversationId": conversation_id,
        "authMode": auth_mode,
        "origin": origin,
        "clientIp": client_ip,
        "reason": reason,
        "durationMs": round(duration_ms, 1),
        "invocationId": invocation_id,
    }
    if by_secondary:
        record["secretSlot"] = "secondary"
    return {key: sanitize(value) if isinstance(value, str) else value for key, value in record.items()}


def format_record(record: dict[str, Any]) -> str:
    # ASCII-only JSON: whatever survives sanitizing still cannot break the line.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


class AuditNotWritten(Exception):
    """The audit line could not be written: the request must not issue what it would have."""


class Confirmation:
    """Goes with an audit line to a log that confirms writes (tokens/logs.py). The writer claims
    the line before writing it and settles it after; a request that gave up waiting abandons it, so
    that a record of what was not issued is never written late."""

    __slots__ = ("_lock", "_settled", "_state", "awaited", "written")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Held until the writer settles: one waiter, one settling, and a lock is the lightest way
        # for a thread to sleep until another says so (an Event is a Condition around two locks).
        self._settled = threading.Lock()
        self._settled.acquire()
        self._state = "queued"  # then "writing", "settled", or "abandoned"
        self.awaited = False  # a confirming log took the line: wait for it to be written
        self.written = False

    def claim(self) -> bool:
        """The writer may write the line (its request still waits for it)."""
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "writing"
            return True

    def settle(self, *, written: bool) -> None:
        with self._lock:
            if self._state == "settled":
                return
            self._state = "settled"
        self.written = written
        self._settled.release()

    def wait(self, seconds: float) -> bool:
        """Whether the line was written within `seconds` (or is being written, and then was)."""
        if self._settled.acquire(timeout=seconds):
            return self.written
        with self._lock:
            if self._state == "queued":
                self._state = "abandoned"
                return False
        return self._settled.acquire(timeout=seconds) and self.written  # caught mid-write


_not_written = 0
_not_written_lock = threading.Lock()


def not_written() -> int:
    """How many audit lines of this process could not be written (their requests issued nothing)."""
    return _not_written


def emit(record: dict[str, Any]) -> None:
    """Log the record; where the log confirms writes, return only once it is written, and raise
    AuditNotWritten when it could not be (in time)."""
    global _not_written  # noqa: PLW0603 - the process's one count, for its exit status
    confirmation = Confirmation()
    log.info(format_record(record), extra={"confirmation": confirmation})
    if confirmation.awaited and not confirmation.wait(AUDIT_WRITE_SECONDS):
        trail_failing.set()
        with _not_written_lock:
            _not_written += 1
        raise AuditNotWritten()
