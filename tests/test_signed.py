"""The service's own signed strings (tokens/signed.py): compact HS256 JWTs with one fixed header,
their claims required, compared in constant time; standard enough that PyJWT reads them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest

from tokens import signed

KEY = b"k" * 32
AUDIENCE = "directline-token-service/test"
NOW = 1_800_000_000


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "dl_ann", "aud": AUDIENCE, "iat": NOW, "exp": NOW + 60}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify(token: object, key: bytes = KEY, audience: str = AUDIENCE, now: float = NOW) -> dict[str, Any]:
    return signed.verify(token, key, audience=audience, now=now)


def test_a_signed_string_gives_back_its_claims() -> None:
    assert verify(signed.sign(claims(), KEY)) == claims()


def test_pyjwt_reads_what_we_sign() -> None:
    decoded = jwt.decode(
        signed.sign(claims(iat=1_700_000_000, exp=2_000_000_000), KEY), KEY, algorithms=["HS256"], audience=AUDIENCE
    )
    assert decoded["sub"] == "dl_ann"


def test_we_read_what_pyjwt_signs_with_the_same_header() -> None:
    """Handles issued before the service signed them itself still work."""
    assert verify(jwt.encode(claims(), KEY, algorithm="HS256"))["sub"] == "dl_ann"


def test_another_key_is_refused() -> None:
    with pytest.raises(signed.BadSignature):
        verify(signed.sign(claims(), KEY), key=b"x" * 32)


def test_another_audience_is_refused() -> None:
    """A user handle is never accepted where another kind of signed string is expected."""
    with pytest.raises(signed.BadSignature):
        verify(signed.sign(claims(), KEY), audience="directline-token-service/other")


def test_a_changed_payload_under_the_old_signature_is_refused() -> None:
    header, _, signature = signed.sign(claims(), KEY).split(".")
    forged = f"{header}.{b64(claims(sub='dl_admin'))}.{signature}"
    with pytest.raises(signed.BadSignature):
        verify(forged)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "HS512", "typ": "JWT"},
        {"typ": "JWT", "alg": "HS256"},  # the same header, spelt differently: only one spelling is ours
        {"alg": "HS256", "typ": "JWT", "kid": "1"},
    ],
)
def test_any_other_header_is_refused_even_with_a_valid_signature(header: dict[str, str]) -> None:
    signing_input = f"{b64(json.dumps(header, separators=(',', ':')).encode())}.{b64(claims())}"
    signature = b64(hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(signed.BadSignature):
        verify(f"{signing_input}.{signature}")


def test_an_expired_string_is_expired_not_bad() -> None:
    with pytest.raises(signed.Expired):
        verify(signed.sign(claims(), KEY), now=NOW + 60)


@pytest.mark.parametrize(
    "bad_claims",
    [
        claims(sub=None), claims(aud=None), claims(iat=None), claims(exp=None),
        claims(sub=42), claims(exp="soon"), claims(exp=True), claims(iat=1.5),
    ],
)
def test_missing_or_mistyped_claims_are_refused(bad_claims: dict[str, Any]) -> None:
    with pytest.raises(signed.BadSignature):
        verify(signed.sign(bad_claims, KEY))


@pytest.mark.parametrize(
    "token",
    [None, 42, "", "a.b", "a.b.c", "é.é.é", "x" * (signed.MAX_LENGTH + 1), "...", "!!!.!!!.!!!"],
)
def test_anything_else_is_refused(token: object) -> None:
    with pytest.raises(signed.BadSignature):
        verify(token)


def test_a_payload_that_is_not_json_is_refused_even_when_signed() -> None:
    header = signed.sign(claims(), KEY).split(".")[0]
    signing_input = f"{header}.{b64(b'not json')}"
    signature = b64(hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(signed.BadSignature):
        verify(f"{signing_input}.{signature}")
