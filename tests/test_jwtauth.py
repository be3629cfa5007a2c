"""`jwt` mode: the site's own sign-in token, verified against keys served over real HTTP on loopback.

The keys are generated here; the identity provider in `tests/jwks_server.py` publishes them and counts
every fetch. Each refusal must be `401 unauthorized`, mint nothing and leave a `denied` audit line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import AuditLog, ServiceFactory, assert_denied, payload, token_request
from tests.fakes import FakeClock, FakeDirectLine
from tests.jwks_server import IdentityProvider, hmac_token, signing_key, unsigned_token
from tokens.http import Response
from tokens.identity import USER_ID_RE, user_id_from_claim
from tokens.jwtauth import JwksCache, JwtIdentity
from tokens.service import TokenService

ISSUER = "https://login.contoso.com/tenant-a/v2.0"
AUDIENCE = "api://directline-token-service"
HS_SECRET = "hs256-site-secret-for-tests-0123456789abcdef"
KEY = signing_key("key-1")
OTHER_KEY = signing_key("key-2")
HASHED_ID = re.compile(r"dl_h_[0-9a-f]{40}")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "name": "Alice", "iat": now, "exp": now + 600,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def ask(service: TokenService, token: str, body: dict[str, Any] | None = None) -> Response:
    return service.issue_token(token_request(body, headers={"Authorization": f"Bearer {token}"}))


def assert_refused(response: Response, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert assert_denied(response, 401, "unauthorized", fake, audit)["authMode"] == "jwt"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.publish(KEY)
    yield provider
    provider.close()


def jwt_settings(idp: IdentityProvider, **extra: str) -> dict[str, str]:
    """`jwt` mode against the test's identity provider, with any further settings."""
    return {
        "AUTH_MODE": "jwt",
        "AUTH_JWT_ISSUER": ISSUER,
        "AUTH_JWT_AUDIENCE": AUDIENCE,
        "AUTH_JWKS_URL": idp.jwks_url,
        **extra,
    }


@pytest.fixture
def service(make_service: ServiceFactory, idp: IdentityProvider) -> TokenService:
    return make_service(**jwt_settings(idp))


def with_cache(service: TokenService, cache: JwksCache) -> TokenService:
    """The same service with a JWKS cache built by the test (short timeout, or a clock it controls)."""
    service.identity = JwtIdentity(service.settings, cache)
    return service


# -- accepted -------------------------------------------------------------------------------------


def test_valid_rs256_token_binds_dl_plus_subject(service: TokenService, fake: FakeDirectLine) -> None:
    response = ask(service, KEY.sign(claims()))
    assert response.status == 200
    assert payload(response)["userId"] == "dl_alice"
    assert fake.requests[0].body["user"] == {"id": "dl_alice", "name": "Alice"}


def test_jwt_answer_carries_no_user_handle(service: TokenService) -> None:
    assert "userHandle" not in payload(ask(service, KEY.sign(claims())))


def test_issued_jwt_token_is_audited_without_the_bearer_token(service: TokenService, audit: AuditLog) -> None:
    token = KEY.sign(claims())
    ask(service, token)
    record = audit.only()
    assert (record["outcome"], record["authMode"], record["userId"]) == ("issued", "jwt", "dl_alice")
    assert token not in audit.all_text


def test_keys_are_fetched_once_and_then_served_from_the_cache(
    service: TokenService, idp: IdentityProvider
) -> None:
    for _ in range(5):
        assert ask(service, KEY.sign(claims())).status == 200
    assert idp.jwks_hits == 1


def test_expired_within_the_60_second_leeway_is_accepted(service: TokenService) -> None:
    assert ask(service, KEY.sign(claims(exp=int(time.time()) - 30))).status == 200


def test_name_comes_from_the_token_not_the_body(service: TokenService, fake: FakeDirectLine) -> None:
    ask(service, KEY.sign(claims()), {"userName": "Mallory"})
    assert fake.requests[0].body["user"]["name"] == "Alice"


def test_name_claim_setting_picks_the_name_sent_to_direct_line(
    make_service: ServiceFactory, idp: IdentityProvider, fake: FakeDirectLine
) -> None:
    service = make_service(**jwt_settings(idp, AUTH_NAME_CLAIM="preferred_username"))
    ask(service, KEY.sign(claims(preferred_username="ann@contoso.com")))
    assert fake.requests[0].body["user"]["name"] == "ann@contoso.com"


def test_token_without_a_name_sends_no_name(service: TokenService, fake: FakeDirectLine) -> None:
    ask(service, KEY.sign(claims(name=None)))
    assert fake.requests[0].body["user"] == {"id": "dl_alice"}


def test_user_claim_setting_picks_the_claim_bound_as_user_id(
    make_service: ServiceFactory, idp: IdentityProvider, fake: FakeDirectLine
) -> None:
    service = make_service(**jwt_settings(idp, AUTH_USER_CLAIM="oid"))
    oid = "6c9a1f0e-33d1-4c55-9b1e-0d8d7c2f4a11"
    ask(service, KEY.sign(claims(oid=oid)))
    assert fake.requests[0].body["user"]["id"] == f"dl_{oid}"


# -- the user id ---------------------------------------------------------------------------------


def test_claim_with_other_characters_becomes_a_stable_hash(service: TokenService) -> None:
    first = payload(ask(service, KEY.sign(claims(sub="alice@contoso.com"))))["userId"]
    second = payload(ask(service, KEY.sign(claims(sub="alice@contoso.com"))))["userId"]
    assert HASHED_ID.fullmatch(first)
    assert first == second


def test_different_claims_hash_to_different_ids() -> None:
    assert user_id_from_claim("alice@contoso.com") != user_id_from_claim("bob@contoso.com")


def test_claim_of_61_characters_is_kept_and_fills_64() -> None:
    claim = "a" * 61
    assert user_id_from_claim(claim) == "dl_" + claim
    assert len(user_id_from_claim(claim)) == 64


def test_claim_of_62_characters_is_hashed() -> None:
    assert HASHED_ID.fullmatch(user_id_from_claim("a" * 62))


def test_claim_shaped_like_a_hashed_id_cannot_take_that_id() -> None:
    """A user who may choose the claim (a user name) must not land on someone else's hashed id."""
    victim = user_id_from_claim("victim@contoso.com")
    assert user_id_from_claim(victim.removeprefix("dl_")) != victim


@pytest.mark.parametrize(
    "claim", ["alice", "a b", "ünïcode", "x" * 500, "h_abc", "dl_alice", "-", "\n", "a/b"]
)
def test_every_derived_id_fits_direct_line(claim: str) -> None:
    assert USER_ID_RE.fullmatch(user_id_from_claim(claim))


def test_numeric_user_claim_is_used_as_text(make_service: ServiceFactory, idp: IdentityProvider) -> None:
    service = make_service(**jwt_settings(idp, AUTH_USER_CLAIM="uid"))
    assert payload(ask(service, KEY.sign(claims(uid=12345))))["userId"] == "dl_12345"


def test_a_numeric_sub_is_used_as_text(service: TokenService) -> None:
    """Some identity providers send `sub` as a number, which PyJWT's own check of `sub` refuses."""
    assert payload(ask(service, KEY.sign(claims(sub=12345))))["userId"] == "dl_12345"


# -- refused ------------------------------------------------------------------------------------


def test_missing_bearer_token_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(service.issue_token(token_request()), fake, audit)


def test_alg_none_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, unsigned_token(claims(), kid=KEY.kid)), fake, audit)


def test_hs256_signed_with_the_rsa_public_key_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    """Algorithm confusion: the public key, known to everyone, used as an HMAC secret."""
    assert_refused(ask(service, hmac_token(claims(), KEY.public_pem, kid=KEY.kid)), fake, audit)


def test_token_signed_by_a_key_not_in_the_set_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_refused(ask(service, OTHER_KEY.sign(claims(), kid=KEY.kid)), fake, audit)


def test_expired_token_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, KEY.sign(claims(exp=int(time.time()) - 120))), fake, audit)


def test_token_not_yet_valid_beyond_the_leeway_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_refused(ask(service, KEY.sign(claims(nbf=int(time.time()) + 120))), fake, audit)


def test_wrong_issuer_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, KEY.sign(claims(iss="https://login.fabrikam.com/v2.0"))), fake, audit)


def test_issuer_that_only_starts_with_the_right_one_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_refused(ask(service, KEY.sign(claims(iss=ISSUER + ".evil.example"))), fake, audit)


def test_issuer_that_is_only_a_prefix_of_the_right_one_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    """PyJWT 2.10.0 matched issuers as substrings (CVE-2024-53861)."""
    assert_refused(ask(service, KEY.sign(claims(iss=ISSUER.removesuffix("/v2.0")))), fake, audit)


def test_wrong_audience_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, KEY.sign(claims(aud="api://another-app"))), fake, audit)


def test_token_without_exp_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, KEY.sign(claims(exp=None))), fake, audit)


def test_token_without_the_user_claim_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_refused(ask(service, KEY.sign(claims(sub=None))), fake, audit)


def test_garbage_bearer_token_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, "not.a.jwt"), fake, audit)


# -- the key set: fetch limits, rotation, failures ---------------------------------------------


def test_unknown_kid_sent_100_times_fetches_the_key_set_at_most_once(
    service: TokenService, idp: IdentityProvider, fake: FakeDirectLine
) -> None:
    statuses = {ask(service, KEY.sign(claims(), kid=f"made-up-{n}")).status for n in range(100)}
    assert statuses == {401}
    assert idp.jwks_hits == 1
    assert fake.requests == []


def cache_on_a_test_clock(service: TokenService, idp: IdentityProvider) -> FakeClock:
    """Give the service a key cache on a clock the test moves, with the key set fetched once."""
    clock = FakeClock()
    with_cache(service, JwksCache(idp.jwks_url, None, clock=clock))
    assert ask(service, KEY.sign(claims())).status == 200
    return clock


def test_key_rotated_in_is_fetched_after_the_one_minute_limit(
    service: TokenService, idp: IdentityProvider
) -> None:
    clock = cache_on_a_test_clock(service, idp)
    idp.publish(OTHER_KEY)
    clock.advance(30)
    assert ask(service, OTHER_KEY.sign(claims())).status == 401
    clock.advance(31)
    assert ask(service, OTHER_KEY.sign(claims())).status == 200
    assert idp.jwks_hits == 2


def test_cached_keys_keep_working_when_the_hourly_refresh_fails(
    service: TokenService, idp: IdentityProvider
) -> None:
    clock = cache_on_a_test_clock(service, idp)
    idp.status = 500
    clock.advance(3601)  # the refresh is due, and the identity provider is down
    assert ask(service, KEY.sign(claims())).status == 200
    assert idp.jwks_hits == 2


def test_cached_keys_are_dropped_after_a_day_without_a_refresh(
    service: TokenService, idp: IdentityProvider
) -> None:
    clock = cache_on_a_test_clock(service, idp)
    idp.status = 500
    clock.advance(86401)
    assert ask(service, KEY.sign(claims())).status == 503


def test_hanging_key_server_is_503_within_the_fetch_timeout(
    service: TokenService, idp: IdentityProvider, fake: FakeDirectLine, audit: AuditLog
) -> None:
    """The caller's token may be fine: the identity provider is what is unreachable."""
    idp.hang_seconds = 10
    with_cache(service, JwksCache(idp.jwks_url, None, timeout=0.2))
    started = time.monotonic()
    response = ask(service, KEY.sign(claims()))
    assert time.monotonic() - started < 1.0
    assert response.status == 503
    assert payload(response)["error"]["code"] == "upstream_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert fake.requests == []
    assert audit.only()["outcome"] == "failed"


def test_after_a_failed_fetch_callers_get_503_at_once_without_refetching(
    service: TokenService, idp: IdentityProvider
) -> None:
    idp.hang_seconds = 10
    with_cache(service, JwksCache(idp.jwks_url, None, timeout=0.2))
    ask(service, KEY.sign(claims()))
    response = ask(service, KEY.sign(claims()))
    assert response.status == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert idp.jwks_hits == 1


@pytest.mark.parametrize(
    "body",
    [b'{"keys": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"keys": [], "keys": []}', b'{"keys": NaN}', b"[]"],
    ids=["nested deeper than the recursion limit", "a duplicate key", "NaN", "not an object"],
)
def test_a_key_set_that_is_not_strict_json_is_503_and_is_not_refetched_for_every_caller(
    body: bytes, service: TokenService, idp: IdentityProvider, audit: AuditLog
) -> None:
    idp.raw_jwks = body
    answers = [ask(service, KEY.sign(claims())) for _ in range(3)]
    assert [(a.status, payload(a)["error"]["code"]) for a in answers] == [(503, "upstream_unavailable")] * 3
    assert idp.jwks_hits == 1
    assert [record["reason"] for record in audit.records] == ["upstream_unavailable"] * 3


def test_key_server_error_status_is_503(service: TokenService, idp: IdentityProvider) -> None:
    idp.status = 500
    assert ask(service, KEY.sign(claims())).status == 503


def test_key_server_that_refuses_connections_is_503(make_service: ServiceFactory) -> None:
    idp = IdentityProvider()
    idp.close()
    service = make_service(**jwt_settings(idp))
    assert ask(service, KEY.sign(claims())).status == 503


def test_malformed_token_does_not_fetch_keys(service: TokenService, idp: IdentityProvider) -> None:
    ask(service, "not.a.jwt")
    assert idp.jwks_hits == 0


# -- OpenID discovery ----------------------------------------------------------------------------


def discovering_service(make_service: ServiceFactory, idp: IdentityProvider) -> TokenService:
    return make_service(AUTH_MODE="jwt", AUTH_JWT_ISSUER=idp.issuer, AUTH_JWT_AUDIENCE=AUDIENCE)


def test_keys_are_found_through_the_issuers_openid_configuration(
    make_service: ServiceFactory, idp: IdentityProvider
) -> None:
    service = discovering_service(make_service, idp)
    assert ask(service, KEY.sign(claims(iss=idp.issuer))).status == 200
    assert idp.hits["/.well-known/openid-configuration"] == 1
    assert idp.jwks_hits == 1


def test_discovered_plain_http_key_url_off_loopback_is_not_fetched(
    make_service: ServiceFactory, idp: IdentityProvider
) -> None:
    idp.jwks_uri = "http://keys.contoso.com/jwks"
    response = ask(discovering_service(make_service, idp), KEY.sign(claims(iss=idp.issuer)))
    assert response.status == 503
    assert idp.jwks_hits == 0


# -- HS256 sites ------------------------------------------------------------------------------------


@pytest.fixture
def hs_service(make_service: ServiceFactory) -> TokenService:
    return make_service(
        AUTH_MODE="jwt", AUTH_JWT_ISSUER=ISSUER, AUTH_JWT_AUDIENCE=AUDIENCE,
        AUTH_JWT_ALGORITHMS="HS256", AUTH_JWT_SECRET=HS_SECRET,
    )


def test_hs256_token_signed_with_the_site_secret_is_accepted(hs_service: TokenService) -> None:
    response = ask(hs_service, hmac_token(claims(), HS_SECRET.encode()))
    assert response.status == 200
    assert payload(response)["userId"] == "dl_alice"


def test_hs256_token_signed_with_another_secret_is_401(
    hs_service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_refused(ask(hs_service, hmac_token(claims(), b"another-secret-of-at-least-32-bytes!!")), fake, audit)


def test_rs256_token_in_hs256_mode_is_401(
    hs_service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    assert_refused(ask(hs_service, KEY.sign(claims())), fake, audit)


def test_alg_none_in_hs256_mode_is_401(hs_service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(hs_service, unsigned_token(claims())), fake, audit)
