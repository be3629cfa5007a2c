"""The token request body: what `parse_token_body` accepts and refuses, as properties that must
hold for every input, generated and hostile (hypothesis)."""

from __future__ import annotations

import contextlib
import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile import CONTROL_CATEGORIES, HOSTILE_CHARACTERS, PROPERTY, any_text, characters
from tokens.body import MAX_BODY_BYTES, MAX_BODY_DEPTH, parse_token_body
from tokens.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from tokens.text import MAX_NAME_LENGTH as MAX_USER_NAME

# -- the body --------------------------------------------------------------------------------------

SPEC_BODY_ERRORS = (InvalidRequest, PayloadTooLarge, UnsupportedMediaType)
content_types = st.sampled_from(
    ["application/json", "Application/JSON; charset=UTF-8", "application/json; charset=latin-1", "text/plain", ""]
) | st.none() | any_text

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["userName", "userHandle", "x"]) | any_text, children, max_size=4),
    max_leaves=12,
)
token_bodies = st.fixed_dictionaries(
    {}, optional={"userName": any_text | json_values, "userHandle": any_text | json_values, "other": json_values}
)


def _encode(value: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


json_bodies = st.builds(_encode, token_bodies | json_values, st.booleans())


@PROPERTY
@given(st.binary(max_size=MAX_BODY_BYTES + 10) | json_bodies, content_types)
def test_body_validation_raises_only_the_spec_errors(body: bytes, content_type: str | None) -> None:
    with contextlib.suppress(*SPEC_BODY_ERRORS):
        parse_token_body(body, content_type)


@PROPERTY
@given(json_bodies)
def test_accepted_body_has_only_the_two_fields_and_a_clean_user_name(body: bytes) -> None:
    try:
        fields = parse_token_body(body, "application/json")
    except SPEC_BODY_ERRORS:
        return
    assert set(fields) <= {"userName", "userHandle"}
    name = fields.get("userName")
    if name is not None:
        assert isinstance(name, str)
        assert 0 < len(name) <= MAX_USER_NAME
        assert name == name.strip()
        assert not any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in name)
    handle = fields.get("userHandle")
    if handle is not None:
        assert isinstance(handle, str)
        handle.encode("utf-8")  # never a lone surrogate that would crash the JWT library


@PROPERTY
@given(st.text(st.sampled_from(HOSTILE_CHARACTERS) | st.characters(max_codepoint=127), max_size=20))
def test_accepted_user_handle_is_text_that_can_be_encoded_again(handle: str) -> None:
    """A `\\ud800` escape must not smuggle a lone surrogate past the body into the JWT library."""
    try:
        fields = parse_token_body(json.dumps({"userHandle": handle}).encode(), "application/json")
    except InvalidRequest:
        return
    fields["userHandle"].encode("utf-8")


@PROPERTY
@given(st.text(characters, min_size=1, max_size=MAX_USER_NAME))
def test_user_name_with_a_control_or_format_character_is_refused(name: str) -> None:
    body = json.dumps({"userName": name}).encode()
    if any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in name):
        with pytest.raises(InvalidRequest):
            parse_token_body(body, "application/json")
    else:
        assert parse_token_body(body, "application/json").get("userName") in (name.strip(), None)


@PROPERTY
@given(st.binary(max_size=MAX_BODY_BYTES), st.binary(min_size=1, max_size=64), content_types)
def test_body_over_the_limit_is_413_whatever_its_type(
    start: bytes, excess: bytes, content_type: str | None
) -> None:
    body = start + b" " * (MAX_BODY_BYTES - len(start)) + excess
    with pytest.raises(PayloadTooLarge):
        parse_token_body(body, content_type)


# -- nesting ---------------------------------------------------------------------------------------


def _nested_in_an_unknown_key(depth: int) -> bytes:
    """A body whose JSON is `depth` containers deep: the object itself and arrays under "x"."""
    arrays = depth - 1
    return b'{"x":' + b"[" * arrays + b"]" * arrays + b"}"


def test_nesting_up_to_the_depth_limit_in_an_unknown_key_is_ignored() -> None:
    assert parse_token_body(_nested_in_an_unknown_key(MAX_BODY_DEPTH), "application/json") == {}


def test_nesting_past_the_depth_limit_is_refused_on_every_python() -> None:
    """Not left to the parser's recursion limit, which Python 3.13 raised past what 4096 bytes hold."""
    with pytest.raises(InvalidRequest, match=f"nested more than {MAX_BODY_DEPTH} deep"):
        parse_token_body(_nested_in_an_unknown_key(MAX_BODY_DEPTH + 1), "application/json")
