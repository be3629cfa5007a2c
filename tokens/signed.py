"""The service's own signed strings (user handles, conversation tickets): compact HS256 JWTs.

Only this service signs them and only this service reads them, so the format is fixed rather than
negotiated: the header must be exactly `{"alg":"HS256","typ":"JWT"}`, byte for byte (no `alg`
choice, no `kid`, no `none`), the signature is compared in constant time, and the claims `aud`,
`sub`, `iat` and `exp` are required. Each kind of string has its own audience, and its own key, so
that one can never be accepted as the other.

Written here rather than with PyJWT because PyJWT imports `cryptography` (about 25 ms) at every cold
start; PyJWT still verifies the identity provider's tokens in `jwt` mode (tokens/jwtauth.py). The
strings are standard JWTs: PyJWT reads them, and the tests check that it does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from typing import Any

_HEADER = b'{"alg":"HS256","typ":"JWT"}'
MAX_LENGTH = 8192  # far above any string this service makes


class BadSignature(Exception):
    """Forged, malformed, for another audience, or not for this key."""


class Expired(Exception):
    """Correctly signed, but its time is up."""


def _encode(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _decode(text: bytes) -> bytes:
    # validate=True: a character outside the URL-safe alphabet is an error, not skipped.
    return base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)


_SIGNED_HEADER = _encode(_HEADER)


def sign(claims: Mapping[str, Any], key: bytes) -> str:
    payload = _encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = _SIGNED_HEADER + b"." + payload
    signature = _encode(hmac.digest(key, signing_input, "sha256"))  # one C call, not an HMAC object
    return (signing_input + b"." + signature).decode("ascii")


def verify(token: object, key: bytes, *, audience: str, now: float) -> dict[str, Any]:
    """The claims of a string this service signed with `key` for `audience`; BadSignature or
    Expired otherwise. `sub` is a string; `iat` and `exp` are whole numbers."""
    if not isinstance(token, str) or len(token) > MAX_LENGTH or not token.isascii():
        raise BadSignature()
    header, _, rest = token.encode("ascii").partition(b".")
    payload, _, signature = rest.partition(b".")
    expected = _encode(hmac.digest(key, header + b"." + payload, "sha256"))
    if not hmac.compare_digest(signature, expected) or header != _SIGNED_HEADER:
        raise BadSignature()
    try:
        claims = json.loads(_decode(payload))
    except (binascii.Error, ValueError):
        raise BadSignature() from None
    if not isinstance(claims, dict) or claims.get("aud") != audience:
        raise BadSignature()
    if not isinstance(claims.get("sub"), str) or not _is_time(claims.get("iat")):
        raise BadSignature()
    expires = claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise BadSignature()
    if now >= expires:
        raise Expired()
    return claims


def _is_time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
