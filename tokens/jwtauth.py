"""`jwt` mode: the site's identity-provider token from `Authorization: Bearer`, verified with PyJWT
against pinned algorithms, issuer and audience; keys from a JWKS that is cached and refetched
sparingly. Imported only in this mode: PyJWT with `cryptography` costs a cold start about 25 ms.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import requests
import urllib3

from tokens import strictjson
from tokens.errors import Unauthorized, UpstreamUnavailable
from tokens.identity import Caller, bearer_token, clean_name, signed_in, user_id_from_claim
from tokens.netio import AnswerTooLarge, DeadlinePassed, read_bounded
from tokens.settings import Settings, key_url

log = logging.getLogger("tokens.identity")

JWT_LEEWAY = 60
MAX_KEY_SET_BYTES = 256 * 1024
MAX_KEY_SET_DEPTH = 8  # {"keys": [{"x5c": ["…"]}]} is four deep; a key set deeper than this is not one


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
        """Fetch the key set; any failure whatever (a network error, a body that is not a key set,
        one too deep to parse) backs off for `retry_after_failure` and is answered 503."""
        self.fetch_count += 1
        fetched = False
        try:
            url = self._jwks_url or self._discover()
            key_set = jwt.PyJWKSet.from_dict(self._get_json(url))
            fetched = True
        except Exception as exc:
            log.error("Could not fetch the identity provider's signing keys: %s", type(exc).__name__)
            raise self._unavailable() from exc
        finally:
            # Set here whatever happened, so that no failure can leave every request refetching.
            self._failed_at = None if fetched else self._clock()
        self._keys = {key.key_id: key for key in key_set.keys}
        self._fetched_at = self._clock()

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
        data = strictjson.loads(raw, max_depth=MAX_KEY_SET_DEPTH)
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
        return signed_in(user_id_from_claim(subject), clean_name(claims.get(self._name_claim)))

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
                # The user claim is checked below, where a number is taken as text: PyJWT's own check
                # of `sub` refuses numbers, which some identity providers send.
                options={"require": ["exp", "iss", "aud"], "verify_sub": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The bearer token has expired.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The bearer token is not valid for this service.") from None
        return claims


def build_jwt_identity(settings: Settings) -> JwtIdentity:
    keys = None
    if not settings.jwt_shared_secret:
        from tokens.directline import new_session

        # The same trust store as Direct Line's (the settings' CA bundle), and the environment read
        # once for proxies rather than on every fetch.
        where = settings.jwks_url or settings.jwt_issuer or ""
        session = new_session(where, pool_size=2, ca_bundle=settings.ca_bundle)
        keys = JwksCache(settings.jwks_url, settings.jwt_issuer, session=session)
    return JwtIdentity(settings, keys)
