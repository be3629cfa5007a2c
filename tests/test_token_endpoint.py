"""POST /api/directline/token against a fake Direct Line over real HTTP on loopback."""

from __future__ import annotations

import re

from tests.conftest import ALLOWED, AuditLog, payload, token_request
from tests.fakes import SECRET, FakeDirectLine
from tokens.service import TokenService

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
