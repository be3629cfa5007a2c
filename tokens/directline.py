"""The Direct Line client: the only place that talks to Direct Line.

One `DirectLineClient` per process holds one pooled `requests.Session`, so token requests reuse warm
TLS connections. Every call has a deadline of `timeout` seconds, connect and read together. A
connection failure or a 500/502/503 answer is retried once after a short jittered pause, only while
the deadline allows; `Retry-After` is reported to the caller, never slept on.

Calls made with the secret (generate, reconnect) try the site's other key, when one is set, only
after Direct Line refused the first (401/403), so that either key can be regenerated without downtime;
the answer says which key served.

Every outcome leaves this module as a dict of Direct Line's own fields or as one of the errors in
`tokens.errors`; nothing from `requests` leaks out. Of Direct Line's error bodies only `error.code` is
read, and only compared with the few codes that change what the operator must do
(`RegionNotAllowed`); it is never logged nor passed on.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter

from tokens import strictjson, trust
from tokens.breaker import Breaker
from tokens.errors import (
    ConversationGone,
    ResumeUnavailable,
    SecretRefused,
    ServiceError,
    TokenExpired,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    WrongRegion,
)
from tokens.netio import AnswerTooLarge, DeadlinePassed, read_bounded
from tokens.notices import Notice
from tokens.settings import DEFAULT_CONCURRENCY, DIRECT_LINE_ENDPOINTS

log = logging.getLogger("tokens.directline")

MAX_RESPONSE_BYTES = 64 * 1024  # a token answer is under 2 KB; anything near this is not one
MAX_RETRY_AFTER = 60
MAX_ANSWER_DEPTH = 8  # a token answer is a flat object; anything deeper is not one
CONNECT_TIMEOUT = 3.05
RETRY_PAUSE = (0.05, 0.15)  # seconds, jittered so that many instances do not retry in step
MIN_RETRY_BUDGET = 0.25  # a retry needs at least this long left to have a chance
RETRYABLE_STATUSES = frozenset({500, 502, 503})
REJECTED_REFRESH_STATUSES = frozenset({400, 401, 403, 404})
USER_AGENT = "directline-token-service/0.1"
JSON_CONTENT = {"Content-Type": "application/json"}
MAX_ERROR_BYTES = 4096  # Direct Line's error bodies are one short object
MAX_ERROR_DEPTH = 4
# Statuses whose error body is read for its code, and the codes that matter (an allow-list: any
# other code is as good as none).
ERROR_CODE_STATUSES = frozenset({400, 401, 403})
REGION_NOT_ALLOWED = "RegionNotAllowed"
KNOWN_ERROR_CODES = frozenset({REGION_NOT_ALLOWED})

JsonObject = dict[str, Any]
OnRejected = Callable[[int, "str | None"], ServiceError]


class Minted(NamedTuple):
    """Direct Line's answer to a call made with a secret, and which of the site's keys it took."""

    answer: JsonObject
    by_secondary: bool  # DIRECT_LINE_SECRET_SECONDARY served it


class _Retryable(Exception):
    """One attempt failed in a way that a second attempt might not; carries the error to give up with."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


class _LoadedTrust(HTTPAdapter):
    """Verifies against a trust store loaded once per process. Given only the bundle's path, as
    requests does it, urllib3 parses the whole bundle again for every new connection (about 20 ms
    here): a cold start's first token and every connection the pool adds would pay it."""

    def __init__(self, ca_bundle: str, **options: Any) -> None:
        self._ca_bundle = ca_bundle  # before HTTPAdapter.__init__, which builds the pool manager
        super().__init__(**options)

    def init_poolmanager(self, *args: Any, **options: Any) -> None:
        super().init_poolmanager(*args, **options, ssl_context=trust.context(self._ca_bundle))

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        # Always verified, against the context's store: requests' own version would look the
        # bundle's path up on disk (two stat calls) for every request, to hand urllib3 a path it
        # must not load again. No client certificate is ever used.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None


def new_session(
    endpoint: str, pool_size: int = DEFAULT_CONCURRENCY, ca_bundle: str | None = None
) -> requests.Session:
    """A pooled session keeping up to `pool_size` connections (one per thread that may call at
    once: a connection made beyond it is closed after use and costs a TLS handshake each time),
    trusting `ca_bundle` (the settings' one; certifi's by default)."""
    session = requests.Session()
    # Read proxies and the CA bundle once: with trust_env, requests re-reads the whole environment
    # (and ~/.netrc) on every call, and a ~/.netrc entry for the host would replace our
    # Authorization header.
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(endpoint)  # honours NO_PROXY
    # requests' own retries would ignore our deadline, so they are off; ours are explicit.
    bundle = ca_bundle or trust.default_bundle()
    adapter = _LoadedTrust(bundle, pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def parse_retry_after(value: str | None, now: float | None = None) -> int | None:
    """Seconds to wait, from a delta or an HTTP date, capped at one minute; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value[:9])  # anything that long is "more than a minute" anyway
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(1, min(MAX_RETRY_AFTER, int(seconds + 0.999)))


class DirectLineClient:
    def __init__(
        self,
        endpoint: str,
        secret: str,
        timeout: float,
        *,
        secondary: str | None = None,
        session: requests.Session | None = None,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._secrets = [secret, secondary] if secondary else [secret]
        self.timeout = timeout
        self.session = session or new_session(self.endpoint)
        self.breaker = breaker or Breaker()
        self._templates: dict[str, requests.PreparedRequest] = {}
        self._clock = clock
        self._sleep = sleep
        self._wrong_region = Notice(log, logging.ERROR, clock=clock)
        self._primary_refused = Notice(log, logging.WARNING, clock=clock)

    def __repr__(self) -> str:
        return f"DirectLineClient(endpoint={self.endpoint!r}, timeout={self.timeout!r})"

    def _template(self, method: str, path: str) -> requests.PreparedRequest:
        """The call prepared once (URL, the session's headers) and copied per call: about a third
        of requests' own cost per call is preparing what is the same every time. Only the token
        routes are kept; a reconnect's path names its conversation."""
        template = self._templates.get(path)
        if template is None:
            request = requests.Request(method, f"{self.endpoint}/{path}", headers=JSON_CONTENT)
            template = self.session.prepare_request(request)
            if path.startswith("tokens/"):
                self._templates[path] = template
        return template

    def close(self) -> None:
        self.session.close()

    def generate(self, user: JsonObject, trusted_origins: list[str]) -> Minted:
        """Mint a token with the secret; `user` is `{"id": "dl_…", "name"?: "…"}`."""
        body: JsonObject = {"user": user}
        if trusted_origins:
            body["trustedOrigins"] = trusted_origins
        return self._call("POST", "tokens/generate", self._secrets, body, _rejected_secret)

    def refresh(self, token: str) -> JsonObject:
        """Refresh a caller's Direct Line token; the secret is not used."""
        return self._call("POST", "tokens/refresh", [token], None, _rejected_token).answer

    def reconnect(self, conversation_id: str) -> Minted:
        """A fresh token for an existing conversation, with the secret (Direct Line's documented
        reconnect); ConversationGone when Direct Line no longer knows the conversation,
        ResumeUnavailable when it refuses the secret a reconnect (Enhanced authentication)."""
        path = f"conversations/{quote(conversation_id, safe='')}"
        return self._call("GET", path, self._secrets, None, _rejected_reconnect)

    def _call(
        self,
        method: str,
        path: str,
        credentials: list[str],
        body: JsonObject | None,
        on_rejected: OnRejected,
    ) -> Minted:
        """One call, with each credential in turn while Direct Line refuses the one before; the
        breaker hears of the call once, whatever happened, and whatever happened leaves as one of the
        service's errors."""
        with self.breaker.guarded() as call:
            deadline = self._clock() + self.timeout
            try:
                payload = None if body is None else json.dumps(body).encode()
                template = self._template(method, path)
                minted = self._with_each_credential(
                    template, credentials, payload, on_rejected=on_rejected, deadline=deadline
                )
            except _Retryable as failure:  # connection failures and 5xx, after the retry
                raise failure.error from failure.__cause__
            except UpstreamTimeout:
                raise
            except ServiceError as error:  # Direct Line answered, if not as hoped: it is up
                call.up = True
                if isinstance(error, WrongRegion):
                    self._log_wrong_region()
                raise
            except Exception as exc:  # a failure nobody foresaw (an unreadable CA bundle): still ours
                log.error("Direct Line call failed unexpectedly: %s", type(exc).__name__)
                raise UpstreamUnavailable() from exc
            call.up = True
            return minted

    def _log_wrong_region(self) -> None:
        self._wrong_region.write(
            "Direct Line answered RegionNotAllowed: the bot's Direct Line lives in another region than "
            "DIRECT_LINE_ENDPOINT (%s) serves. Set DIRECT_LINE_ENDPOINT to the endpoint of the bot's "
            "region: %s",
            self.endpoint,
            ", ".join(DIRECT_LINE_ENDPOINTS),
        )

    def _with_each_credential(
        self,
        template: requests.PreparedRequest,
        credentials: list[str],
        payload: bytes | None,
        *,
        on_rejected: OnRejected,
        deadline: float,
    ) -> Minted:
        last = len(credentials) - 1
        for index, bearer in enumerate(credentials):
            request = template.copy()
            request.headers["Authorization"] = f"Bearer {bearer}"
            request.prepare_body(payload, None)
            try:
                return Minted(self._with_one_retry(request, on_rejected, deadline), by_secondary=index > 0)
            except SecretRefused:
                if index == last:
                    raise
                self._primary_refused.write(
                    "Direct Line refused DIRECT_LINE_SECRET; DIRECT_LINE_SECRET_SECONDARY is tried "
                    "instead. If a key was regenerated, put the working key in DIRECT_LINE_SECRET"
                )
        raise AssertionError("no credentials")  # pragma: no cover

    def _with_one_retry(
        self, request: requests.PreparedRequest, on_rejected: OnRejected, deadline: float
    ) -> JsonObject:
        for attempt in (1, 2):
            try:
                return self._attempt(request, on_rejected, deadline)
            except _Retryable as failure:
                # Jitter only spreads the retries of many instances: no secret, no crypto needed.
                pause = random.uniform(*RETRY_PAUSE)  # noqa: S311  # nosec B311
                left = deadline - self._clock()
                if attempt == 2 or left < pause + MIN_RETRY_BUDGET:
                    raise
                log.warning(
                    "Direct Line call %s %s failed (%s); retrying once",
                    request.method, request.path_url, failure.error.code,
                )
                self._sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, request: requests.PreparedRequest, on_rejected: OnRejected, deadline: float
    ) -> JsonObject:
        left = deadline - self._clock()
        if left <= 0:
            raise UpstreamTimeout()
        try:
            # Straight to the session's adapter (requests' transport, its pool and proxies):
            # Session.send adds what these calls never use (cookies kept from Direct Line's answers,
            # redirects looked for, hooks), about a twelfth of serve's CPU per token.
            response = self.session.get_adapter(request.url or "").send(
                request,
                stream=True,
                timeout=(min(CONNECT_TIMEOUT, left), left),
                verify=True,
                cert=None,
                proxies=self.session.proxies,
            )
        except requests.ConnectTimeout as exc:
            if self._clock() >= deadline:
                raise UpstreamTimeout() from exc
            # Connecting gave up before the deadline did: like a refused connection, worth the one
            # retry while the deadline allows.
            raise _Retryable(_unavailable(None)) from exc
        except requests.Timeout as exc:
            raise UpstreamTimeout() from exc
        except requests.RequestException as exc:
            raise _Retryable(_unavailable(None)) from exc
        with response:
            return self._read_answer(response, on_rejected, deadline)

    def _read_answer(
        self, response: requests.Response, on_rejected: OnRejected, deadline: float
    ) -> JsonObject:
        status = response.status_code
        if status == 429:
            raise _unavailable(response.headers.get("Retry-After"))
        if status in RETRYABLE_STATUSES:
            error: ServiceError = (
                _unavailable(response.headers.get("Retry-After"))
                if status == 503
                else UpstreamError(f"Direct Line answered HTTP {status}.")
            )
            raise _Retryable(error)
        if status != 200:
            code = self._error_code(response, deadline) if status in ERROR_CODE_STATUSES else None
            raise on_rejected(status, code)
        return _parse_token_answer(self._read_body(response, deadline))

    def _error_code(self, response: requests.Response, deadline: float) -> str | None:
        """The refusal's `error.code` when it is one of KNOWN_ERROR_CODES; None for anything else,
        an unreadable body included (the status alone then decides)."""
        try:
            raw = self._read_body(response, deadline, MAX_ERROR_BYTES)
            answer = strictjson.loads(raw, max_depth=MAX_ERROR_DEPTH)
        except (ServiceError, _Retryable, strictjson.NotStrictJson):
            return None
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code if code in KNOWN_ERROR_CODES else None

    def _read_body(
        self, response: requests.Response, deadline: float, limit: int = MAX_RESPONSE_BYTES
    ) -> bytes:
        try:
            return read_bounded(response, limit, deadline, self._clock)
        except AnswerTooLarge:
            raise UpstreamError("Direct Line's answer was too large to be a token.") from None
        except DeadlinePassed:
            raise UpstreamTimeout() from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if self._clock() >= deadline:
                raise UpstreamTimeout() from exc
            raise _Retryable(_unavailable(None)) from exc


def _unavailable(retry_after: str | None) -> UpstreamUnavailable:
    return UpstreamUnavailable(retry_after=parse_retry_after(retry_after))


def _rejected_secret(status: int, code: str | None) -> ServiceError:
    if code == REGION_NOT_ALLOWED:
        return WrongRegion()
    message = (
        f"Direct Line refused the token request (HTTP {status}); check DIRECT_LINE_SECRET "
        "and DIRECT_LINE_ENDPOINT."
    )
    return SecretRefused(message) if status in (401, 403) else UpstreamError(message)


def _rejected_reconnect(status: int, code: str | None) -> ServiceError:
    if status == 404:
        return ConversationGone()
    if status == 400:  # "MissingProperty": with Enhanced authentication the secret may not reconnect
        return ResumeUnavailable()
    return _rejected_secret(status, code)


def _rejected_token(status: int, code: str | None) -> ServiceError:
    if status in REJECTED_REFRESH_STATUSES:
        return TokenExpired()
    return UpstreamError(f"Direct Line refused the refresh (HTTP {status}).")


def _parse_token_answer(raw: bytes) -> JsonObject:
    try:
        answer = strictjson.loads(raw, max_depth=MAX_ANSWER_DEPTH)
    except strictjson.NotStrictJson:
        raise UpstreamError("Direct Line's answer was not strict JSON.") from None
    if not isinstance(answer, dict):
        raise UpstreamError("Direct Line's answer was not a JSON object.")
    token, conversation = answer.get("token"), answer.get("conversationId")
    if not isinstance(token, str) or not token or not isinstance(conversation, str):
        raise UpstreamError("Direct Line's answer had no token or conversation id.")
    expires_in = answer.get("expires_in")
    if expires_in is not None and (not isinstance(expires_in, int) or isinstance(expires_in, bool)):
        raise UpstreamError("Direct Line's answer had an expires_in that is not a number.")
    return answer
