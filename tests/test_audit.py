"""The audit record, built by a pure function."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.hostile import PROPERTY, characters
from tokens.audit import EVENTS, MAX_STRING, build_record, format_record, outcome_for, sanitize


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


def test_a_call_served_by_the_second_key_says_so_and_others_keep_the_spec_fields() -> None:
    assert _record(by_secondary=True)["secretSlot"] == "secondary"
    assert "secretSlot" not in _record(by_secondary=False)


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


# -- properties: the audit record ------------------------------------------------------------------


def has_hidden_characters(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in text)


@PROPERTY
@given(st.text(characters, max_size=1000))
def test_sanitize_leaves_no_control_character_and_at_most_the_cap(value: str) -> None:
    clean = sanitize(value)
    assert not has_hidden_characters(clean)
    assert len(clean) <= MAX_STRING


optional_text = st.none() | st.text(characters, max_size=400)
records = st.builds(
    build_record,
    event=st.sampled_from(EVENTS),
    status=st.sampled_from([200, 400, 401, 403, 413, 415, 429, 500, 502, 503, 504]),
    user_id=optional_text,
    conversation_id=optional_text,
    auth_mode=st.text(characters, max_size=40),
    origin=optional_text,
    client_ip=optional_text,
    reason=optional_text,
    duration_ms=st.floats(0, 1e7),
    invocation_id=optional_text,
)


@PROPERTY
@given(records)
def test_every_string_in_a_record_is_clean_and_capped(record: dict[str, Any]) -> None:
    for value in record.values():
        if isinstance(value, str):
            assert not has_hidden_characters(value)
            assert len(value) <= MAX_STRING
    assert record["outcome"] == outcome_for(record["status"])


@PROPERTY
@given(records)
def test_a_formatted_record_is_one_ascii_line_that_parses_back(record: dict[str, Any]) -> None:
    line = format_record(record)
    assert line.isascii()
    assert line.isprintable()
    assert len(line.splitlines()) == 1
    assert json.loads(line) == record
