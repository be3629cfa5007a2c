"""Bad requests get the SPEC's status and code, mint nothing, and still leave one audit line."""

from __future__ import annotations

import pytest

from tests.conftest import AuditLog, assert_denied, corpus_lines, payload, token_request
from tests.fakes import FakeDirectLine
from tokens.http import Request
from tokens.service import TokenService


def _assert_refused(
    service: TokenService, request: Request, status: int, code: str, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_denied(service.issue_token(request), status, code, fake, audit)


BAD_BODIES = [
    ("oversize body", b'{"userName": "' + b"a" * 5000 + b'"}', "application/json", 413, "payload_too_large"),
    ("text/plain body", b'{"userName": "Ann"}', "text/plain", 415, "unsupported_media_type"),
    ("form body", b"userName=Ann", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("json with latin-1 charset", b'{"userName": "Ann"}', "application/json; charset=latin-1", 415, "unsupported_media_type"),
    ("body without content type", b'{"userName": "Ann"}', None, 415, "unsupported_media_type"),
    ("json array", b"[]", "application/json", 400, "invalid_request"),
    ("json string", b'"hello"', "application/json", 400, "invalid_request"),
    ("json null", b"null", "application/json", 400, "invalid_request"),
    ("broken json", b'{"userName": ', "application/json", 400, "invalid_request"),
    ("invalid utf-8", b'{"userName": "\xff\xfe"}', "application/json", 400, "invalid_request"),
    ("userName too long", b'{"userName": "' + b"a" * 65 + b'"}', "application/json", 400, "invalid_request"),
    ("userName with newline", b'{"userName": "Ann\\nINFO forged line"}', "application/json", 400, "invalid_request"),
    ("userName with ANSI escape", b'{"userName": "\\u001b[31mAnn"}', "application/json", 400, "invalid_request"),
    ("userName with right-to-left override", b'{"userName": "Ann\\u202e"}', "application/json", 400, "invalid_request"),
    ("userName a number", b'{"userName": 42}', "application/json", 400, "invalid_request"),
    ("userHandle an object", b'{"userHandle": {"sub": "dl_x"}}', "application/json", 400, "invalid_request"),
    ("duplicate keys", b'{"userName": "a", "userName": "b"}', "application/json", 400, "invalid_request"),
    ("deep nesting", b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json", 413, "payload_too_large"),
    ("nesting within the size limit", b"[" * 2000 + b"]" * 2000, "application/json", 400, "invalid_request"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_body_is_refused_before_any_upstream_call(
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
    service: TokenService,
    fake: FakeDirectLine,
    audit: AuditLog,
) -> None:
    _assert_refused(service, token_request(body, content_type=content_type), status, code, fake, audit)


def test_user_name_of_exactly_64_characters_is_accepted(service: TokenService, fake: FakeDirectLine) -> None:
    response = service.issue_token(token_request({"userName": "é" * 64}))
    assert response.status == 200
    assert fake.requests[0].body["user"]["name"] == "é" * 64


def test_unknown_keys_are_ignored(service: TokenService) -> None:
    assert service.issue_token(token_request({"colour": "blue", "userName": "Ann"})).status == 200


def test_json_media_type_with_utf8_charset_is_accepted(service: TokenService) -> None:
    request = token_request({"userName": "Ann"}, content_type="Application/JSON; charset=UTF-8")
    assert service.issue_token(request).status == 200


@pytest.mark.parametrize("origin", corpus_lines("bad_origins.txt"))
def test_disallowed_or_look_alike_origin_is_403_and_mints_nothing(
    origin: str, service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    response = service.issue_token(token_request(origin=origin))
    assert response.status == 403
    assert payload(response)["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.all_headers()
    assert fake.requests == []
    assert audit.only()["reason"] == "origin_not_allowed"


def test_disallowed_origin_is_refused_before_the_body_is_read(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    request = token_request(b"x" * 10_000, origin="https://evil.example", content_type="text/plain")
    _assert_refused(service, request, 403, "origin_not_allowed", fake, audit)


def test_error_to_an_allowed_origin_is_readable_by_the_page(service: TokenService) -> None:
    response = service.issue_token(token_request(b"[]"))
    assert response.status == 400
    assert response.all_headers()["Access-Control-Allow-Origin"] == "https://www.contoso.com"


def test_preflight_from_allowed_origin(service: TokenService) -> None:
    response = service.preflight(token_request(method="OPTIONS"))
    headers = response.all_headers()
    assert response.status == 204
    assert response.body == b""
    assert headers["Access-Control-Allow-Origin"] == "https://www.contoso.com"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert headers["Access-Control-Max-Age"] == "600"
    assert headers["Vary"] == "Origin"


def test_preflight_from_disallowed_origin_is_403(service: TokenService) -> None:
    response = service.preflight(token_request(method="OPTIONS", origin="https://evilcontoso.com"))
    assert response.status == 403
    assert payload(response)["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.all_headers()


def test_preflight_writes_no_audit_record(service: TokenService, audit: AuditLog) -> None:
    service.preflight(token_request(method="OPTIONS"))
    assert audit.records == []
