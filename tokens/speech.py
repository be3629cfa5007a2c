"""Speech credentials for Web Chat's speech (the Azure AI Speech ponyfill): an authorization token and
the region, minted here so that no Speech key (and no identity) ever reaches a browser.

- identity mode (SPEECH_RESOURCE_ID): the app's managed identity gets a Microsoft Entra token for
  Cognitive Services through azure-identity's ManagedIdentityCredential (AZURE_CLIENT_ID names a
  user-assigned identity), imported only in this mode, on the first speech request, so that the token
  route's cold start does not pay for it. The browser gets `aad#{resource id}#{Entra token}`, the form
  the Speech SDK takes (see docs/speech.md for what a visitor then holds, and for how long).
- key mode (SPEECH_KEY): the key is exchanged for a 10-minute token at
  `{SPEECH_ENDPOINT}/sts/v1.0/issueToken` (`Ocp-Apim-Subscription-Key`).

Speech tokens are not bound to a user, so one per process is cached and handed out until a minute
before it expires; then one caller refreshes it while the others keep the cached one (no herd of
callers asking at once). Every failure leaves as one of the service's errors (502, 503 with
Retry-After, 504), never with the upstream's own words; the key and the Entra token's source are
never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import requests

from tokens.directline import new_session, parse_retry_after
from tokens.errors import ServiceError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from tokens.netio import AnswerTooLarge, DeadlinePassed, read_bounded
from tokens.settings import Settings, speech_mode

log = logging.getLogger("tokens.speech")

SCOPE = "https://cognitiveservices.azure.com/.default"
REFRESH_BEFORE = 60.0  # seconds: a token this close to its end is refreshed, as the SPEC says
ISSUED_LIFETIME = 600.0  # an issueToken token lives 10 minutes, when its own `exp` does not say
MAX_TOKEN_BYTES = 8 * 1024


class Minted(NamedTuple):
    authorization_token: str
    expires_at: float  # on the service's monotonic clock


class Minter(Protocol):
    def __call__(self) -> Minted: ...


class SpeechTokens:
    """The process's one speech token, minted by `mint` and reused until REFRESH_BEFORE its end."""

    def __init__(self, region: str, mint: Minter, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.region = region
        self._mint = mint
        self._clock = clock
        self._cached: Minted | None = None
        self._refreshing = threading.Lock()

    def current(self) -> tuple[str, int]:
        """The token and the whole seconds it has left; a ServiceError when none can be minted."""
        cached, now = self._cached, self._clock()
        if cached is not None and now < cached.expires_at - REFRESH_BEFORE:
            return self._answer(cached, now)
        if cached is not None and now < cached.expires_at:
            if not self._refreshing.acquire(blocking=False):
                return self._answer(cached, now)  # another caller refreshes it; this one still works
        else:
            self._refreshing.acquire()  # none to hand out: wait for whoever mints one
        try:
            cached = self._cached
            if cached is None or self._clock() >= cached.expires_at - REFRESH_BEFORE:
                try:
                    cached = self._cached = self._mint()
                except ServiceError:
                    if cached is None or self._clock() >= cached.expires_at:
                        raise
                    log.warning("Refreshing the speech token failed; the current one is used meanwhile")
            return self._answer(cached, self._clock())
        finally:
            self._refreshing.release()

    @staticmethod
    def _answer(minted: Minted, now: float) -> tuple[str, int]:
        return minted.authorization_token, max(0, int(minted.expires_at - now))


# -- key mode: the region's (or the custom subdomain's) issueToken ----------------------------------


class IssueToken:
    """`POST {endpoint}/sts/v1.0/issueToken` with the Speech key, within `timeout` seconds."""

    def __init__(
        self,
        endpoint: str,
        key: str,
        timeout: float,
        *,
        session: requests.Session,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = f"{endpoint}/sts/v1.0/issueToken"
        self._key = key
        self._timeout = timeout
        self._session = session
        self._clock = clock
        self._wall_clock = wall_clock

    def __repr__(self) -> str:  # never the key
        return f"IssueToken({self._url!r})"

    def __call__(self) -> Minted:
        deadline = self._clock() + self._timeout
        try:
            response = self._session.post(
                self._url,
                headers={"Ocp-Apim-Subscription-Key": self._key, "Content-Length": "0"},
                timeout=(min(3.05, self._timeout), self._timeout),
                stream=True,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise UpstreamTimeout("The Speech service did not answer in time.") from exc
        except requests.RequestException as exc:
            raise UpstreamUnavailable("The Speech service could not be reached; try again shortly.") from exc
        with response:
            token = _read_token(response, deadline, self._clock)
        return Minted(token, self._clock() + _seconds_left(token, self._wall_clock()))


def _read_token(response: requests.Response, deadline: float, clock: Callable[[], float]) -> str:
    status = response.status_code
    if status in (429, 503):
        raise UpstreamUnavailable(
            "The Speech service is busy; try again shortly.",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status in (401, 403):
        log.error("The Speech service refused SPEECH_KEY (HTTP %d): check it and SPEECH_ENDPOINT", status)
        raise UpstreamError("The Speech service refused the service's credential.")
    if status != 200:
        raise UpstreamError(f"The Speech service answered HTTP {status}.")
    try:
        raw = read_bounded(response, MAX_TOKEN_BYTES, deadline, clock)
    except DeadlinePassed:
        raise UpstreamTimeout("The Speech service did not answer in time.") from None
    except (AnswerTooLarge, requests.RequestException, OSError):
        raise UpstreamError("The Speech service's answer was not a token.") from None
    token = raw.decode("ascii", "replace").strip()
    if not _looks_like_a_jwt(token):
        raise UpstreamError("The Speech service's answer was not a token.")
    return token


def _looks_like_a_jwt(token: str) -> bool:
    parts = token.split(".")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    return len(parts) == 3 and all(part and set(part) <= alphabet for part in parts[:2])


def _seconds_left(token: str, now: float) -> float:
    """From the token's own `exp` (read, not verified: the service only passes it on), else ten
    minutes, as issueToken's tokens live."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims["exp"])
    except (ValueError, KeyError, TypeError, IndexError):
        return ISSUED_LIFETIME
    return max(0.0, min(exp - now, 24 * 3600.0))


# -- identity mode: the app's managed identity ------------------------------------------------------


class ManagedIdentityToken:
    """A Microsoft Entra token for Cognitive Services from the app's managed identity, answered in the
    Speech SDK's form for Entra authentication: `aad#{resource id}#{token}`."""

    def __init__(
        self,
        resource_id: str,
        client_id: str | None,
        timeout: float,
        *,
        credential: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._resource_id = resource_id
        self._client_id = client_id
        self._timeout = timeout
        self._credential = credential  # built on first use: azure-identity costs its import
        self._clock = clock
        self._wall_clock = wall_clock

    def __call__(self) -> Minted:
        from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestTimeoutError

        try:
            access = self._managed_identity().get_token(SCOPE)
        except ServiceRequestTimeoutError as exc:
            raise UpstreamTimeout("The identity endpoint did not answer in time.") from exc
        except ClientAuthenticationError as exc:  # no identity here, or it was refused
            log.error(
                "The app's managed identity got no token for Speech (%s): check that the app has an "
                "identity, that AZURE_CLIENT_ID names it, and its role on SPEECH_RESOURCE_ID",
                type(exc).__name__,
            )
            raise UpstreamError("The service could not get a Speech token with its identity.") from exc
        except AzureError as exc:
            raise UpstreamUnavailable("The identity endpoint could not be reached; try again.") from exc
        left = max(0.0, access.expires_on - self._wall_clock())
        return Minted(f"aad#{self._resource_id}#{access.token}", self._clock() + left)

    def _managed_identity(self) -> Any:
        if self._credential is None:
            from azure.identity import ManagedIdentityCredential

            # Their warnings quote the identity endpoint's own words, with tracebacks; this module
            # says what failed and what to check, once, in its own words.
            for name in ("azure.identity", "azure.core"):
                logging.getLogger(name).setLevel(logging.CRITICAL)

            self._credential = ManagedIdentityCredential(
                client_id=self._client_id,
                connection_timeout=self._timeout,
                read_timeout=self._timeout,
                retry_total=1,
            )
        return self._credential


def build_speech(settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> SpeechTokens | None:
    """The process's speech tokens for these settings, or None when speech is not configured."""
    mode = speech_mode(settings)
    if mode is None or settings.speech_region is None:
        return None
    mint: Minter
    if mode == "identity" and settings.speech_resource_id is not None:
        mint = ManagedIdentityToken(
            settings.speech_resource_id, settings.azure_client_id, settings.upstream_timeout, clock=clock
        )
    else:
        endpoint = settings.speech_endpoint or ""
        session = new_session(endpoint, pool_size=2, ca_bundle=settings.ca_bundle)
        key = settings.speech_key or ""
        mint = IssueToken(endpoint, key, settings.upstream_timeout, session=session, clock=clock)
    return SpeechTokens(settings.speech_region, mint, clock=clock)

