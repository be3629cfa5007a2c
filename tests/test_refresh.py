"""POST /api/directline/refresh: the caller's own Direct Line token, refreshed through the same
endpoint with that token (never the secret), against a fake Direct Line over real HTTP on loopback."""

from __future__ import annotations

import pytest

from tests.conftest import ALLOWED, AuditLog, assert_denied, payload, token_request
from tests.fakes import SECRET, FakeDirectLine
from tokens.http import Response
from tokens.service import TokenService

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
