"""Who is calling: the user id bound into the token always comes from here, never from the request.

- anonymous: a fresh `dl_` + 128 random bits, or the subject of a valid `userHandle` (an HS256 JWT this
  service signed earlier), so a returning browser keeps its user id without a login.
- jwt: the site's identity-provider token from `Authorization: Bearer`, verified with PyJWT against
  pinned algorithms, issuer and audience; keys from a JWKS that is cached and refetched sparingly.
- easyauth: the principal headers that App Service Authentication injects (read in this mode only).

Every id leaving this module matches `USER_ID_RE`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
import requests
import urllib3

from tokens.errors import Unauthorized, UpstreamUnavailable
from tokens.netio import AnswerTooLarge, DeadlinePassed, read_bounded
from tokens.settings import Settings, key_url

log = logging.getLogger("tokens.identity")

USER_ID_RE = re.compile(r"dl_[A-Za-z0-9_-]{1,61}")
_CLAIM_RE = re.compile(r"[A-Za-z0-9_-]{1,61}")
_HASHED_PREFIX = "h_"
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*", re.ASCII)
HANDLE_AUDIENCE = "directline-token-service/user-handle"
HANDLE_ALGORITHM = "HS256"
MAX_CREDENTIAL_LENGTH = 8192
MAX_NAME_LENGTH = 64
JWT_LEEWAY = 60
MAX_KEY_SET_BYTES = 256 * 1024


@dataclass(frozen=True)
class Caller:
    user_id: str
    name: str | None
    # True when the id is proven (a login, or a handle we signed): it can then key the rate limit.
    verified: bool


class Identity(Protocol):
    mode: str

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Caller: ...


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
    text = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C").strip()
    return text[:MAX_NAME_LENGTH] or None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credential of `Authorization: Bearer <credential>`, when it is made of RFC 6750's
    token68 characters (a JWT, a Direct Line token); anything else is no credential at all."""
    scheme, _, credential = headers.get("authorization", "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or len(credential) > MAX_CREDENTIAL_LENGTH:
        return None
    return credential if _TOKEN68_RE.fullmatch(credential) else None


class AnonymousIdentity:
    mode = "anonymous"

    def __init__(self, handle_key: bytes, handle_ttl: int, clock: Callable[[], float] = time.time):
        self._key = handle_key
        self._ttl = handle_ttl
        self._clock = clock

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Caller:
        handle = body.get("userHandle")
        name = body.get("userName")
        name = name if isinstance(name, str) and name else None
        if handle is None:
            return Caller(new_user_id(), name, verified=False)
        return Caller(self.verify_handle(handle), name, verified=True)

    def issue_handle(self, user_id: str) -> str:
        now = int(self._clock())
        claims = {"sub": user_id, "aud": HANDLE_AUDIENCE, "iat": now, "exp": now + self._ttl}
        return jwt.encode(claims, self._key, algorithm=HANDLE_ALGORITHM)

    def verify_handle(self, handle: str) -> str:
        if not isinstance(handle, str) or len(handle) > MAX_CREDENTIAL_LENGTH:
            raise Unauthorized("The userHandle is not valid; send none to start as a new user.")
        try:
            claims = jwt.decode(
                handle,
                self._key,
                algorithms=[HANDLE_ALGORITHM],
                audience=HANDLE_AUDIENCE,
                options={"require": ["sub", "exp", "iat", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The userHandle has expired; send none to start as a new user.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The userHandle is not valid; send none to start as a new user.") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not USER_ID_RE.fullmatch(subject):
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
        # Facebook, say): qualify the id by its provider. Entra ID's object ids are unique already.
        provider = headers.get("x-ms-client-principal-idp", "").strip().lower()
        claim = principal if provider in ("", "aad") else f"{provider}_{principal}"
        return Caller(
            user_id_from_claim(claim),
            clean_name(headers.get("x-ms-client-principal-name")),
            verified=True,
        )


class JwksCache:
    """Signing keys by `kid`, fetched with a short timeout; an unknown kid refetches sparingly.

    PyJWKClient refetches on every unknown kid, which lets a caller with made-up kids make us hammer
    the identity provider; here a refetch happens at most once per `min_interval` seconds.
    """

    def __init__(
        self,
        jwks_url: str | None,
        issuer: str | None,
        *,
        timeout: float = 3.0,
        min_interval: float = 60.0,
        retry_after_failure: float = 10.0,
        max_age: float = 3600.0,
        max_stale_age: float = 86400.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._timeout = timeout
        self._min_interval = min_interval
        self._retry_after_failure = retry_after_failure
        self._max_age = max_age
        self._max_stale_age = max_stale_age
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self.fetch_count = 0

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        key = self._lookup(kid)
        if key is not None and not self._refresh_due():
            return key
        if key is not None:
            # Refresh in the background of this one request; others keep the cached key meanwhile.
            if self._lock.acquire(blocking=False):
                try:
                    self._refresh_quietly()
                finally:
                    self._lock.release()
            return self._lookup(kid) or key
        with self._lock:
            key = self._lookup(kid)
            if key is None and self._may_fetch():
                self._fetch()
                key = self._lookup(kid)
        if key is None:
            if self._failed_at is not None:
                # The last fetch failed, so it is the key set that is unknown, not the caller's key.
                raise self._unavailable()
            raise Unauthorized("The bearer token was signed with an unknown key.")
        return key

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if self._fetched_at is not None and self._clock() - self._fetched_at > self._max_stale_age:
            return None  # too old to trust even through an outage of the identity provider
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _refresh_due(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at > self._max_age

    def _refresh_quietly(self) -> None:
        """The periodic refresh: when the identity provider is down, keep the last good key set
        (up to `max_stale_age`) rather than turning every signed-in caller away."""
        if not self._refresh_due() or not self._may_fetch():
            return
        try:
            self._fetch()
        except UpstreamUnavailable:
            log.warning("Keeping the cached signing keys while the identity provider is unreachable")

    def _may_fetch(self) -> bool:
        now = self._clock()
        if self._failed_at is not None and now - self._failed_at < self._retry_after_failure:
            return False
        if self._fetched_at is None or now - self._fetched_at > self._max_age:
            return True
        return now - self._fetched_at >= self._min_interval

    def _fetch(self) -> None:
        self.fetch_count += 1
        try:
            url = self._jwks_url or self._discover()
            data = self._get_json(url)
            key_set = jwt.PyJWKSet.from_dict(data)
        except (requests.RequestException, ValueError, jwt.PyJWTError) as exc:
            self._failed_at = self._clock()
            log.error("Could not fetch the identity provider's signing keys: %s", type(exc).__name__)
            raise self._unavailable() from exc
        self._keys = {key.key_id: key for key in key_set.keys}
        self._fetched_at = self._clock()
        self._failed_at = None

    def _unavailable(self) -> UpstreamUnavailable:
        """503 until the next fetch may be tried, with Retry-After saying when that is."""
        since_failure = self._clock() - self._failed_at if self._failed_at is not None else 0.0
        return UpstreamUnavailable(
            "The identity provider's signing keys could not be fetched; try again shortly.",
            retry_after=max(1, math.ceil(self._retry_after_failure - since_failure)),
        )

    def _discover(self) -> str:
        issuer = (self._issuer or "").rstrip("/")
        config = self._get_json(f"{issuer}/.well-known/openid-configuration")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str) or key_url(jwks_uri) is None:
            raise ValueError("the OpenID configuration has no usable jwks_uri")
        return jwks_uri

    def _get_json(self, url: str) -> dict[str, Any]:
        deadline = self._clock() + self._timeout
        response = self._session.get(
            url, timeout=(self._timeout, self._timeout), allow_redirects=False, stream=True
        )
        with response:
            response.raise_for_status()
            try:
                raw = read_bounded(response, MAX_KEY_SET_BYTES, deadline, self._clock)
            except (AnswerTooLarge, DeadlinePassed, urllib3.exceptions.HTTPError, OSError) as exc:
                raise ValueError(f"key set not read: {type(exc).__name__}") from exc
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data


class JwtIdentity:
    mode = "jwt"

    def __init__(self, settings: Settings, keys: JwksCache | None) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._secret = settings.jwt_secret
        self._user_claim = settings.user_claim
        self._name_claim = settings.name_claim
        self._keys = keys

    def identify(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> Caller:
        token = bearer_token(headers)
        if token is None:
            raise Unauthorized("Send the site's sign-in token as Authorization: Bearer <token>.")
        claims = self._verify(token)
        subject = claims.get(self._user_claim)
        if isinstance(subject, int) and not isinstance(subject, bool):
            subject = str(subject)
        if not isinstance(subject, str) or not subject:
            raise Unauthorized(f"The bearer token has no {self._user_claim[:64]!r} claim.")
        return Caller(user_id_from_claim(subject), clean_name(claims.get(self._name_claim)), True)

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            key: Any = self._secret
            if self._keys is not None:
                kid = jwt.get_unverified_header(token).get("kid")
                key = self._keys.key_for(kid if isinstance(kid, str) else None)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=JWT_LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The bearer token has expired.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The bearer token is not valid for this service.") from None
        return claims


def build_identity(settings: Settings) -> Identity:
    if settings.auth_mode == "jwt":
        hmac_mode = settings.jwt_algorithms[0].startswith("HS")
        keys = None if hmac_mode else JwksCache(settings.jwks_url, settings.jwt_issuer)
        return JwtIdentity(settings, keys)
    if settings.auth_mode == "easyauth":
        return EasyAuthIdentity()
    return AnonymousIdentity(settings.user_handle_key, settings.user_handle_ttl)
