"""The audit trail: exactly one JSON line per POST to the token, refresh and resume routes.

`build_record` is pure and tested directly; `emit` writes the line on the `tokens.audit` logger.
Only the fields below are ever recorded: no token, secret, handle, JWT or Authorization header.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tokens.text import one_line

AUDIT_LOGGER = "tokens.audit"
MAX_STRING = 256
EVENTS = ("directline.token", "directline.refresh", "directline.resume")

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


def emit(record: dict[str, Any]) -> None:
    log.info(format_record(record))
