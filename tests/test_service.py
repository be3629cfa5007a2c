"""The service's use cases in process, against a fake Direct Line over real HTTP on loopback: issuing
and refreshing tokens, refusing bad requests and origins, answering preflights."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ALLOWED, AuditLog, assert_denied, corpus_lines, payload, token_request
from tests.fakes import SECRET, FakeDirectLine
from tokens.http import Request, Response
from tokens.service import TokenService

# -- POST /api/directline/token --------------------------------------------------------------------


USER_ID = re.compile(r"dl_[A-Za-z0-9_-]{1,61}")


def test_answers_200_with_direct_line_fields_user_id_and_domain(service: TokenService) -> None:
    response = service.issue_token(token_request())
    assert response.status == 200
    data = payload(response)
    assert data["conversationId"] == "conv-1"
    assert data["token"].startswith("dl-token-1-")
    assert data["expires_in"] == 1800
    assert data["extraField"] == "passed through"
    assert USER_ID.fullmatch(data["userId"])
    assert data["domain"] == service.client.endpoint
    assert isinstance(data["userHandle"], str)


def test_response_is_json_and_never_cached(service: TokenService) -> None:
    headers = service.issue_token(token_request()).all_headers()
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")


def test_upstream_receives_the_secret_as_bearer(service: TokenService, fake: FakeDirectLine) -> None:
    service.issue_token(token_request())
    assert fake.requests[0].path == "/v3/directline/tokens/generate"
    assert fake.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_upstream_user_id_is_server_made_with_128_random_bits(service: TokenService, fake: FakeDirectLine) -> None:
    service.issue_token(token_request({"userName": "Ann"}))
    user = fake.requests[0].body["user"]
    assert re.fullmatch(r"dl_[0-9a-f]{32}", user["id"])
    assert user["name"] == "Ann"


def test_each_new_caller_gets_a_fresh_user_id(service: TokenService, fake: FakeDirectLine) -> None:
    ids = {payload(service.issue_token(token_request()))["userId"] for _ in range(5)}
    assert len(ids) == 5
    assert {r.body["user"]["id"] for r in fake.requests} == ids


def test_allowed_origin_becomes_the_only_trusted_origin(service: TokenService, fake: FakeDirectLine) -> None:
    service.issue_token(token_request(origin=ALLOWED))
    assert fake.requests[0].body["trustedOrigins"] == [ALLOWED]


def test_request_without_origin_is_served_without_trusted_origins(
    service: TokenService, fake: FakeDirectLine
) -> None:
    response = service.issue_token(token_request(origin=None))
    assert response.status == 200
    assert "trustedOrigins" not in fake.requests[0].body
    assert "Access-Control-Allow-Origin" not in response.all_headers()


def test_allowed_origin_is_echoed_never_star(service: TokenService) -> None:
    headers = service.issue_token(token_request(origin="https://shop.contoso.com")).all_headers()
    assert headers["Access-Control-Allow-Origin"] == "https://shop.contoso.com"
    assert headers["Vary"] == "Origin"


def test_user_supplied_id_in_body_is_ignored(service: TokenService, fake: FakeDirectLine) -> None:
    service.issue_token(token_request({"userId": "dl_admin", "user": {"id": "dl_admin"}}))
    assert fake.requests[0].body["user"]["id"] != "dl_admin"


def test_empty_body_is_the_same_as_an_empty_object(service: TokenService) -> None:
    response = service.issue_token(token_request(b"", content_type=None))
    assert response.status == 200


def test_issued_token_writes_one_audit_record(service: TokenService, audit: AuditLog) -> None:
    data = payload(service.issue_token(token_request()))
    record = audit.only()
    assert record["event"] == "directline.token"
    assert record["outcome"] == "issued"
    assert record["status"] == 200
    assert record["userId"] == data["userId"]
    assert record["conversationId"] == data["conversationId"]
    assert record["authMode"] == "anonymous"
    assert record["origin"] == ALLOWED
    assert record["clientIp"] == "203.0.113.0"
    assert record["reason"] is None
    assert record["invocationId"] == "test-invocation"
    assert data["token"] not in audit.all_text
    assert data["userHandle"] not in audit.all_text
    assert SECRET not in audit.all_text


# -- POST /api/directline/refresh ------------------------------------------------------------------


CALLER_TOKEN = "ew0KICAiYWxnIjogIlJTMjU2Ig0K.caller-direct-line-token.sig"


def refresh(
    service: TokenService, token: str | None = CALLER_TOKEN, *, origin: str | None = ALLOWED
) -> Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return service.refresh_token(token_request(origin=origin, headers=headers))


def test_valid_token_is_refreshed(service: TokenService) -> None:
    response = refresh(service)
    assert response.status == 200
    data = payload(response)
    assert set(data) == {"conversationId", "token", "expires_in", "domain"}
    assert data["conversationId"] == "conv-1"
    assert data["token"].startswith("dl-token-1-")
    assert data["expires_in"] == 1800
    assert data["domain"] == service.client.endpoint


def test_upstream_sees_the_callers_token_not_the_secret(service: TokenService, fake: FakeDirectLine) -> None:
    refresh(service)
    upstream = fake.requests[0]
    assert upstream.path == "/v3/directline/tokens/refresh"
    assert upstream.headers["Authorization"] == f"Bearer {CALLER_TOKEN}"
    assert all(SECRET not in value for value in upstream.headers.values())
    assert upstream.body is None


@pytest.mark.parametrize("status", [401, 403, 404])
def test_expired_or_unknown_token_is_401_token_expired(
    status: int, service: TokenService, fake: FakeDirectLine
) -> None:
    fake.then_status(status)
    response = refresh(service)
    assert response.status == 401
    assert payload(response)["error"]["code"] == "token_expired"


def test_missing_authorization_is_401_unauthorized(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_denied(refresh(service, None), 401, "unauthorized", fake, audit)


def test_non_bearer_authorization_is_401_unauthorized(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    response = service.refresh_token(token_request(headers={"Authorization": f"Basic {CALLER_TOKEN}"}))
    assert_denied(response, 401, "unauthorized", fake, audit)


def test_refresh_writes_one_audit_record_with_the_conversation(
    service: TokenService, audit: AuditLog
) -> None:
    data = payload(refresh(service))
    record = audit.only()
    assert record["event"] == "directline.refresh"
    assert record["outcome"] == "issued"
    assert record["conversationId"] == data["conversationId"]
    assert CALLER_TOKEN not in audit.all_text
    assert data["token"] not in audit.all_text


def test_expired_refresh_is_audited_as_denied(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    fake.then_status(403)
    refresh(service)
    record = audit.only()
    assert (record["event"], record["outcome"], record["reason"]) == (
        "directline.refresh", "denied", "token_expired",
    )


def test_refresh_from_a_disallowed_origin_is_403(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_denied(refresh(service, origin="https://evil.example"), 403, "origin_not_allowed", fake, audit)


def test_refresh_from_an_allowed_origin_carries_cors_headers(service: TokenService) -> None:
    headers = refresh(service, origin="https://shop.contoso.com").all_headers()
    assert headers["Access-Control-Allow-Origin"] == "https://shop.contoso.com"
    assert headers["Vary"] == "Origin"


# -- bad requests, origins and preflights ----------------------------------------------------------


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


@pytest.mark.parametrize("origin", [ALLOWED, "https://evil.example", None])
def test_every_answer_that_an_origin_could_change_says_vary_origin(service: TokenService, origin: str | None) -> None:
    answers = [
        service.preflight(token_request(method="OPTIONS", origin=origin)),
        service.health(token_request(method="GET", origin=origin)),
        service.issue_token(token_request({}, origin=origin)),
        service.refresh_token(token_request(None, origin=origin)),
    ]
    assert [answer.all_headers().get("Vary") for answer in answers] == ["Origin"] * 4
