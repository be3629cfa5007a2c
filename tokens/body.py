"""The request bodies of the token and resume routes: size, media type, JSON object, and their fields."""

from __future__ import annotations

from typing import Any

from tokens import strictjson
from tokens.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from tokens.text import MAX_NAME_LENGTH, has_control

MAX_BODY_BYTES = 4096
# A token body is flat. Deeper nesting in an ignored key is refused at this depth whatever the Python:
# its own parser stops near 1000 levels on 3.11 (the recursion limit, less the caller's stack) but
# parses any 4096-byte body on 3.13, which would otherwise turn the same request's 400 into a 200.
MAX_BODY_DEPTH = 800


def is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type, *params = (part.strip().lower() for part in content_type.split(";"))
    if media_type != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def parse_token_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The validated body as a dict with at most `userName` and `userHandle`; raise the SPEC's error."""
    return _token_fields(_json_object(body, content_type))


def parse_resume_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The token body's fields plus the required `conversationTicket`; raise the SPEC's error."""
    data = _json_object(body, content_type)
    fields = _token_fields(data)
    ticket = data.get("conversationTicket")
    if ticket is None:
        raise InvalidRequest("conversationTicket is required (the one of the last token or resume answer).")
    if not isinstance(ticket, str):
        raise InvalidRequest("conversationTicket must be a string.")
    fields["conversationTicket"] = ticket
    return fields


def _json_object(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as a JSON object (an empty body is `{}`): size, media type, strict JSON, Unicode."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    if not body:
        return {}
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType()
    try:
        data = strictjson.loads(body, max_depth=MAX_BODY_DEPTH)
    except strictjson.NotStrictJson as error:
        raise InvalidRequest(f"The request body is not valid UTF-8 JSON: {error}.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def _token_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    name = data.get("userName")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidRequest("userName must be a string.")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidRequest(f"userName must be at most {MAX_NAME_LENGTH} characters.")
        if has_control(name):
            raise InvalidRequest("userName must not contain control characters.")
        if name.strip():
            fields["userName"] = name.strip()
    handle = data.get("userHandle")
    if handle is not None:
        if not isinstance(handle, str):
            raise InvalidRequest("userHandle must be a string.")
        fields["userHandle"] = handle
    return fields
