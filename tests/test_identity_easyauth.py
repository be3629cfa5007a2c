"""`easyauth` mode: App Service Authentication's principal headers name the caller; in the other modes
the same headers are just text a caller typed, and grant nothing."""

from __future__ import annotations

import re
import time

import jwt
import pytest

from tests.conftest import AuditLog, ServiceFactory, assert_denied, payload, token_request
from tests.fakes import FakeDirectLine
from tokens.http import Response
from tokens.identity import user_id_from_claim
from tokens.service import TokenService

PRINCIPAL_ID = "6c9a1f0e-33d1-4c55-9b1e-0d8d7c2f4a11"
VICTIM = "victim"
HS_SECRET = "hs256-site-secret-for-tests-0123456789abcdef"
ISSUER = "https://login.contoso.com/tenant-a/v2.0"
AUDIENCE = "api://directline-token-service"


def principal_headers(principal_id: str = PRINCIPAL_ID, name: str = "ann@contoso.com") -> dict[str, str]:
    return {"X-MS-CLIENT-PRINCIPAL-ID": principal_id, "X-MS-CLIENT-PRINCIPAL-NAME": name}


def ask(service: TokenService, headers: dict[str, str], body: dict[str, str] | None = None) -> Response:
    return service.issue_token(token_request(body, headers=headers))


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service(AUTH_MODE="easyauth")


# -- easyauth mode -----------------------------------------------------------------------------


def test_principal_headers_give_user_id_and_name(service: TokenService, fake: FakeDirectLine) -> None:
    response = ask(service, principal_headers())
    assert response.status == 200
    assert payload(response)["userId"] == f"dl_{PRINCIPAL_ID}"
    assert fake.requests[0].body["user"] == {"id": f"dl_{PRINCIPAL_ID}", "name": "ann@contoso.com"}


def test_principal_id_with_other_characters_is_hashed(service: TokenService) -> None:
    user_id = payload(ask(service, principal_headers("ann@contoso.com")))["userId"]
    assert re.fullmatch(r"dl_h_[0-9a-f]{40}", user_id)


def test_name_comes_from_the_header_not_the_body(service: TokenService, fake: FakeDirectLine) -> None:
    ask(service, principal_headers(), {"userName": "Mallory"})
    assert fake.requests[0].body["user"]["name"] == "ann@contoso.com"


def test_easyauth_answer_carries_no_user_handle(service: TokenService) -> None:
    assert "userHandle" not in payload(ask(service, principal_headers()))


def test_issued_easyauth_token_is_audited_with_mode_and_user(service: TokenService, audit: AuditLog) -> None:
    ask(service, principal_headers())
    record = audit.only()
    assert (record["outcome"], record["authMode"], record["userId"]) == (
        "issued", "easyauth", f"dl_{PRINCIPAL_ID}",
    )


def test_missing_principal_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_denied(ask(service, {}), 401, "unauthorized", fake, audit)


def test_blank_principal_id_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_denied(ask(service, principal_headers("   ")), 401, "unauthorized", fake, audit)


def test_name_header_alone_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    response = ask(service, {"X-MS-CLIENT-PRINCIPAL-NAME": "ann@contoso.com"})
    assert_denied(response, 401, "unauthorized", fake, audit)


# -- the same headers forged in the other modes ------------------------------------------------


def test_forged_principal_in_anonymous_mode_gets_a_random_id(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    response = ask(make_service(AUTH_MODE="anonymous"), principal_headers(VICTIM, "Victim"))
    assert response.status == 200
    assert re.fullmatch(r"dl_[0-9a-f]{32}", fake.requests[0].body["user"]["id"])
    assert "name" not in fake.requests[0].body["user"]


@pytest.fixture
def jwt_service(make_service: ServiceFactory) -> TokenService:
    """`jwt` mode with the site's HS256 secret."""
    return make_service(
        AUTH_MODE="jwt", AUTH_JWT_ISSUER=ISSUER, AUTH_JWT_AUDIENCE=AUDIENCE,
        AUTH_JWT_ALGORITHMS="HS256", AUTH_JWT_SECRET=HS_SECRET,
    )


def test_forged_principal_in_jwt_mode_without_a_token_is_401(
    jwt_service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_denied(ask(jwt_service, principal_headers(VICTIM)), 401, "unauthorized", fake, audit)


def test_forged_principal_in_jwt_mode_does_not_override_the_token(
    jwt_service: TokenService, fake: FakeDirectLine
) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 600}
    token = jwt.encode(claims, HS_SECRET, algorithm="HS256")
    ask(jwt_service, {**principal_headers(VICTIM, "Victim"), "Authorization": f"Bearer {token}"})
    assert fake.requests[0].body["user"] == {"id": "dl_alice"}


def test_ids_from_other_providers_are_qualified_by_the_provider(service: TokenService, fake: FakeDirectLine) -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL-ID": "1234567890", "X-MS-CLIENT-PRINCIPAL-IDP": "google"}
    assert service.issue_token(token_request(headers=headers)).status == 200
    headers["X-MS-CLIENT-PRINCIPAL-IDP"] = "facebook"
    assert service.issue_token(token_request(headers=headers)).status == 200
    google, facebook = (r.body["user"]["id"] for r in fake.requests)
    assert google != facebook
    assert google == user_id_from_claim("google\n1234567890")


def test_a_provider_and_an_id_cannot_spell_another_pair(service: TokenService, fake: FakeDirectLine) -> None:
    """With "_" between them, "a_b" + "c" and "a" + "b_c" would be one person."""
    for provider, principal in (("a_b", "c"), ("a", "b_c")):
        headers = {"X-MS-CLIENT-PRINCIPAL-ID": principal, "X-MS-CLIENT-PRINCIPAL-IDP": provider}
        assert service.issue_token(token_request(headers=headers)).status == 200
    first, second = (r.body["user"]["id"] for r in fake.requests)
    assert first != second


def test_entra_ids_are_kept_readable(service: TokenService, fake: FakeDirectLine) -> None:
    oid = "8f2b7c1e-4a5d-4e6f-9a0b-1c2d3e4f5a6b"
    for idp in ("aad", None):
        headers = {"X-MS-CLIENT-PRINCIPAL-ID": oid} | ({"X-MS-CLIENT-PRINCIPAL-IDP": idp} if idp else {})
        service.issue_token(token_request(headers=headers))
    assert [r.body["user"]["id"] for r in fake.requests] == [f"dl_{oid}", f"dl_{oid}"]
