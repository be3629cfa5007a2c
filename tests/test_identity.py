"""`anonymous` mode's user handles: a returning browser keeps its user id, and nobody can forge one.

Every bad handle is `401 unauthorized`, never silently replaced by a new user id: it mints nothing and
leaves a `denied` audit line.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import AuditLog, ServiceFactory, assert_denied, payload, token_request
from tests.fakes import FakeDirectLine
from tests.hostile import PROPERTY, characters
from tests.jwks_server import unsigned_token
from tokens.http import Response
from tokens.identity import HANDLE_AUDIENCE, new_user_id, user_id_from_claim
from tokens.service import TokenService

HANDLE_KEY = "user-handle-key-for-tests-0123456789abcdef"
OTHER_KEY = "another-handle-key-of-32-bytes-or-more!!"
USER_ID = "dl_0123456789abcdef0123456789abcdef"


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service(USER_HANDLE_KEY=HANDLE_KEY, USER_HANDLE_TTL="3600")


def handle_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": USER_ID, "aud": HANDLE_AUDIENCE, "iat": now, "exp": now + 600}
    base.update(overrides)
    return base


def signed_handle(key: str = HANDLE_KEY, **overrides: Any) -> str:
    return jwt.encode(handle_claims(**overrides), key, algorithm="HS256")


def ask(service: TokenService, handle: str | None = None) -> Response:
    return service.issue_token(token_request({} if handle is None else {"userHandle": handle}))


def assert_refused(response: Response, fake: FakeDirectLine, audit: AuditLog, handle: str) -> None:
    record = assert_denied(response, 401, "unauthorized", fake, audit)
    assert record["userId"] is None
    assert not handle or handle not in audit.all_text


# -- accepted --------------------------------------------------------------------------------------


def test_handle_sent_back_gives_the_same_user_id(service: TokenService, fake: FakeDirectLine) -> None:
    first = payload(ask(service))
    second = payload(ask(service, first["userHandle"]))
    assert second["userId"] == first["userId"]
    assert fake.requests[1].body["user"]["id"] == first["userId"]


def test_handle_from_the_default_derived_key_round_trips(make_service: ServiceFactory) -> None:
    service = make_service()
    first = payload(ask(service))
    assert payload(ask(service, first["userHandle"]))["userId"] == first["userId"]


def test_returning_caller_gets_a_handle_for_the_same_id(service: TokenService) -> None:
    first = payload(ask(service))
    second = payload(ask(service, first["userHandle"]))
    claims = jwt.decode(second["userHandle"], HANDLE_KEY, algorithms=["HS256"], audience=HANDLE_AUDIENCE)
    assert claims["sub"] == first["userId"]


def test_issued_handle_expires_after_the_configured_ttl(service: TokenService) -> None:
    handle = payload(ask(service))["userHandle"]
    claims = jwt.decode(handle, HANDLE_KEY, algorithms=["HS256"], audience=HANDLE_AUDIENCE)
    assert claims["exp"] - claims["iat"] == 3600


def test_handle_is_never_logged(service: TokenService, audit: AuditLog) -> None:
    first = payload(ask(service))
    ask(service, first["userHandle"])
    assert first["userHandle"] not in audit.all_text


# -- refused ---------------------------------------------------------------------------------------


def test_handle_with_changed_subject_and_old_signature_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    header, _, signature = signed_handle().split(".")
    forged_claims = json.dumps(handle_claims(sub="dl_victim")).encode()
    forged_payload = base64.urlsafe_b64encode(forged_claims).rstrip(b"=").decode()
    forged = f"{header}.{forged_payload}.{signature}"
    assert_refused(ask(service, forged), fake, audit, forged)


def test_handle_with_a_forged_signature_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    header, claims, _ = signed_handle().split(".")
    forged = f"{header}.{claims}.{base64.urlsafe_b64encode(b'x' * 32).rstrip(b'=').decode()}"
    assert_refused(ask(service, forged), fake, audit, forged)


def test_expired_handle_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    handle = signed_handle(exp=int(time.time()) - 10)
    assert_refused(ask(service, handle), fake, audit, handle)


def test_handle_signed_with_another_key_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    handle = signed_handle(OTHER_KEY)
    assert_refused(ask(service, handle), fake, audit, handle)


def test_handle_from_before_a_secret_rotation_is_401(
    make_service: ServiceFactory, fake: FakeDirectLine, audit: AuditLog
) -> None:
    """With no USER_HANDLE_KEY the key comes from the secret, so a new secret retires old handles."""
    handle = payload(ask(make_service()))["userHandle"]
    fake.requests.clear()
    audit_count = len(audit.records)
    response = ask(make_service(DIRECT_LINE_SECRET="rotated-directline-secret-4Tz8pW1qLx"), handle)
    assert response.status == 401
    assert fake.requests == []
    assert audit.records[audit_count]["outcome"] == "denied"


def test_handle_with_alg_none_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    handle = unsigned_token(handle_claims())
    assert_refused(ask(service, handle), fake, audit, handle)


def test_truncated_handle_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    handle = signed_handle()[:-10]
    assert_refused(ask(service, handle), fake, audit, handle)


def test_handle_cut_before_its_signature_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    handle = signed_handle().rsplit(".", 1)[0]
    assert_refused(ask(service, handle), fake, audit, handle)


@pytest.mark.parametrize("subject", ["admin", "dl_", "dl_a b", "dl_" + "a" * 62, "DL_abc", " dl_abc"])
def test_handle_whose_subject_is_not_a_dl_user_id_is_401(
    subject: str, service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    handle = signed_handle(sub=subject)
    assert_refused(ask(service, handle), fake, audit, handle)


def test_handle_for_another_audience_is_401(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    """A JWT signed with the same key for some other purpose is not a user handle."""
    handle = signed_handle(aud="some-other-app")
    assert_refused(ask(service, handle), fake, audit, handle)


def test_empty_handle_is_401(service: TokenService, fake: FakeDirectLine, audit: AuditLog) -> None:
    assert_refused(ask(service, ""), fake, audit, "")


def test_bad_handle_error_tells_the_caller_to_start_anew(service: TokenService) -> None:
    message = payload(ask(service, "garbage"))["error"]["message"]
    assert "send none" in message


# -- properties: user ids --------------------------------------------------------------------------

USER_ID_PATTERN = re.compile(r"dl_[A-Za-z0-9_-]{1,61}")
claims = st.text(characters | st.sampled_from("h_-.@ "), min_size=1, max_size=120)


@PROPERTY
@given(claims | st.from_regex(r"h_[0-9a-f]{40}", fullmatch=True))
def test_user_id_from_any_claim_is_a_dl_id_and_stable(claim: str) -> None:
    user_id = user_id_from_claim(claim)
    assert USER_ID_PATTERN.fullmatch(user_id)
    assert user_id_from_claim(claim) == user_id


@PROPERTY
@given(claims, claims)
def test_different_claims_give_different_user_ids(first: str, second: str) -> None:
    """Including a claim spelled like another claim's hash: no user can take another's id."""
    if first != second:
        assert user_id_from_claim(first) != user_id_from_claim(second)
    hashed = user_id_from_claim(first + "\x00")  # never plain, so always hashed
    assert user_id_from_claim(hashed[len("dl_") :]) != hashed


@PROPERTY
@given(st.from_regex(r"[A-Za-z0-9_-]{1,61}", fullmatch=True))
def test_a_claim_that_fits_is_kept_readable(claim: str) -> None:
    """Unless it starts with `h_`, which only hashed ids may."""
    user_id = user_id_from_claim(claim)
    if claim.startswith("h_"):
        assert re.fullmatch(r"dl_h_[0-9a-f]{40}", user_id)
    else:
        assert user_id == f"dl_{claim}"


def test_user_id_from_a_claim_with_a_lone_surrogate_is_a_dl_id() -> None:
    """A JWT claim may carry a lone surrogate as a `\\ud800` escape; hashing it once raised (a 500)."""
    assert USER_ID_PATTERN.fullmatch(user_id_from_claim("user\ud800"))


def test_new_user_ids_are_dl_ids_and_distinct() -> None:
    ids = {new_user_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(USER_ID_PATTERN.fullmatch(user_id) for user_id in ids)
