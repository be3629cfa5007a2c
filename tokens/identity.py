"""Who is calling: the user id bound into the token always comes from here, never from the request.

- anonymous: a fresh `dl_` + 128 random bits, or the subject of a valid `userHandle` (a string this
  service signed earlier, see tokens/signed.py), so a returning browser keeps its user id without a
  login.
- jwt: the site's identity-provider token from `Authorization: Bearer`, verified with PyJWT
  (tokens/jwtauth.py, imported only in that mode).
- easyauth: the principal headers that App Service Authentication injects (read in this mode only).

Each identity returns a `Caller` that carries what differs between the modes: how its allowance is
counted (by its network address, by its user id, or both), and the fields its answer carries besides
the token. Every id leaving this module matches `USER_ID_RE`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from tokens import signed
from tokens.errors import Unauthorized
from tokens.text import MAX_NAME_LENGTH, without_control

if TYPE_CHECKING:
    from tokens.settings import Settings

USER_ID_RE = re.compile(r"dl_[A-Za-z0-9_-]{1,61}")
_CLAIM_RE = re.compile(r"[A-Za-z0-9_-]{1,61}")
_HASHED_PREFIX = "h_"
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*", re.ASCII)
HANDLE_AUDIENCE = "directline-token-service/user-handle"
MAX_CREDENTIAL_LENGTH = 8192


class Caller(NamedTuple):
    user_id: str
    name: str | None
    # How the caller's allowance is counted (see tokens/ratelimit.py): by its network address, by
    # its user id (`user:<id>`), or both.
    by_address: bool
    user_key: str | None
    # Fields of the answer besides Direct Line's own and the user id (anonymous: the userHandle).
    answer_fields: Mapping[str, str]


class Identity(Protocol):
    mode: str  # the SPEC's AUTH_MODE, as the audit record names it

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Caller:
        """The caller of a request; raises Unauthorized."""
        ...


def new_user_id() -> str:
    return "dl_" + secrets.token_hex(16)


def user_id_from_claim(claim: str) -> str:
    """`dl_` + the claim when it fits the allowed characters, else a stable hash of it.

    A claim that itself starts with `h_` is hashed too: otherwise a user who may choose the claim (a
    user name, say) could pick `h_<hash of someone's e-mail>` and be bound to that person's id.
    """
    if _CLAIM_RE.fullmatch(claim) and not claim.startswith(_HASHED_PREFIX):
        return "dl_" + claim
    # surrogatepass: a JSON claim may carry a lone surrogate (\ud800), which strict UTF-8 refuses.
    return "dl_" + _HASHED_PREFIX + hashlib.sha256(claim.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def clean_name(value: object) -> str | None:
    """A display name from a trusted source, made safe to bind: no control characters, capped."""
    if not isinstance(value, str):
        return None
    return without_control(value).strip()[:MAX_NAME_LENGTH] or None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credential of `Authorization: Bearer <credential>`, when it is made of RFC 6750's
    token68 characters (a JWT, a Direct Line token); anything else is no credential at all."""
    scheme, _, credential = headers.get("authorization", "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or len(credential) > MAX_CREDENTIAL_LENGTH:
        return None
    return credential if _TOKEN68_RE.fullmatch(credential) else None


def signed_in(user_id: str, name: str | None) -> Caller:
    """A caller whose id a login proves: counted by that id wherever it comes from."""
    return Caller(user_id, name, by_address=False, user_key="user:" + user_id, answer_fields={})


class AnonymousIdentity:
    mode = "anonymous"

    def __init__(self, handle_key: bytes, handle_ttl: int, clock: Callable[[], float] = time.time):
        self._key = handle_key
        self._ttl = handle_ttl
        self._clock = clock

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Caller:
        handle = body.get("userHandle")
        name = body.get("userName") or None
        # Counted by address, and by user id too when a handle names one: handles cost nothing to
        # collect, so they must not buy extra allowance from one address, and one handle used from
        # many addresses is still one user.
        user_id = new_user_id() if handle is None else self.verify_handle(handle)
        user_key = None if handle is None else "user:" + user_id
        fields = {"userHandle": self.issue_handle(user_id)}
        return Caller(user_id, name, by_address=True, user_key=user_key, answer_fields=fields)

    def issue_handle(self, user_id: str) -> str:
        now = int(self._clock())
        claims = {"sub": user_id, "aud": HANDLE_AUDIENCE, "iat": now, "exp": now + self._ttl}
        return signed.sign(claims, self._key)

    def verify_handle(self, handle: object) -> str:
        try:
            claims = signed.verify(handle, self._key, audience=HANDLE_AUDIENCE, now=self._clock())
        except signed.Expired:
            raise Unauthorized("The userHandle has expired; send none to start as a new user.") from None
        except signed.BadSignature:
            raise Unauthorized("The userHandle is not valid; send none to start as a new user.") from None
        subject: str = claims["sub"]
        if not USER_ID_RE.fullmatch(subject):
            raise Unauthorized("The userHandle is not valid; send none to start as a new user.")
        return subject


class EasyAuthIdentity:
    """App Service Authentication strips any client-sent principal headers and injects its own."""

    mode = "easyauth"

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Caller:
        principal = headers.get("x-ms-client-principal-id", "").strip()
        if not principal or len(principal) > 1024:
            raise Unauthorized("Sign in first: no App Service Authentication principal was found.")
        # With several providers on one app, two people may share an id (numeric ids of Google and
        # Facebook, say): qualify the id by its provider. The two are joined with a line break, which
        # no header value holds, so no provider and id can spell another pair (as "a_b" + "c" and
        # "a" + "b_c" would with "_"); the result is hashed. Entra ID's object ids are unique already.
        provider = headers.get("x-ms-client-principal-idp", "").strip().lower()
        claim = principal if provider in ("", "aad") else f"{provider}\n{principal}"
        return signed_in(user_id_from_claim(claim), clean_name(headers.get("x-ms-client-principal-name")))


def build_identity(settings: Settings) -> Identity:
    if settings.auth_mode == "jwt":
        from tokens.jwtauth import build_jwt_identity

        return build_jwt_identity(settings)
    if settings.auth_mode == "easyauth":
        return EasyAuthIdentity()
    return AnonymousIdentity(settings.user_handle_key, settings.user_handle_ttl)
