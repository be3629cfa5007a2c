"""The audit record, built by a pure function."""

from __future__ import annotations

import json

from tokens.audit import build_record, format_record, outcome_for, sanitize


def _record(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = dict(
        event="directline.token", status=200, user_id="dl_abc", conversation_id="c1",
        auth_mode="anonymous", origin="https://www.contoso.com", client_ip="203.0.113.0",
        reason=None, duration_ms=41.6789, invocation_id="inv-1",
    )
    fields.update(overrides)
    return build_record(**fields)  # type: ignore[arg-type]


def test_record_has_exactly_the_spec_fields() -> None:
    assert _record() == {
        "event": "directline.token", "outcome": "issued", "status": 200, "userId": "dl_abc",
        "conversationId": "c1", "authMode": "anonymous", "origin": "https://www.contoso.com",
        "clientIp": "203.0.113.0", "reason": None, "durationMs": 41.7, "invocationId": "inv-1",
    }


def test_outcome_follows_the_status() -> None:
    assert [outcome_for(s) for s in (200, 204, 400, 429, 500, 504)] == [
        "issued", "issued", "denied", "denied", "failed", "failed",
    ]


def test_control_characters_are_removed_and_strings_capped() -> None:
    record = _record(origin="https://a\r\nINFO tokens.audit {forged}\x1b[31m\u202e" + "x" * 1000)
    origin = record["origin"]
    assert isinstance(origin, str)
    assert "\n" not in origin and "\r" not in origin and "\x1b" not in origin and "\u202e" not in origin
    assert len(origin) == 256


def test_formatted_record_is_one_ascii_line() -> None:
    line = format_record(_record(origin="https://ü.example"))
    assert "\n" not in line and line.isascii()
    assert json.loads(line)["origin"] == "https://ü.example"


def test_sanitize_keeps_plain_spaces() -> None:
    assert sanitize("Ann Lee\t") == "Ann Lee"
