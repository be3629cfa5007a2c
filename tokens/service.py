"""The use cases: issue, refresh and resume tokens, answer a preflight, report health, warm up.

Orchestration only: each step is a call into the module that owns it, and every outcome of a POST,
good or bad, leaves exactly one audit record.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tokens import audit, origins, warmup
from tokens.body import MAX_BODY_BYTES, parse_resume_body, parse_token_body
from tokens.clientip import client_address, for_audit, rate_limit_network
from tokens.directline import DirectLineClient, new_session
from tokens.errors import (
    Misconfigured,
    OriginNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    ResumeUnavailable,
    ServiceError,
    Unauthorized,
)
from tokens.http import Request, Response, error_response, json_response
from tokens.identity import Identity, bearer_token, build_identity
from tokens.notices import Notice
from tokens.ratelimit import RateLimiter
from tokens.settings import (
    DEFAULT_CONCURRENCY,
    Problem,
    Settings,
    SettingsError,
    browser_problems,
    derive_handle_key,
)
from tokens.tickets import Tickets, check_owner

log = logging.getLogger("tokens.service")


class Service(Protocol):
    def issue_token(self, request: Request) -> Response: ...
    def refresh_token(self, request: Request) -> Response: ...
    def resume(self, request: Request) -> Response: ...
    def preflight(self, request: Request) -> Response: ...
    def health(self, request: Request) -> Response: ...
    def warm_up(self, *, past_due: bool) -> None: ...


class _Outcome:
    """What the audit record needs to know, filled in as the request goes along."""

    __slots__ = ("by_secondary", "client_address", "conversation_id", "counted", "user_id")

    def __init__(self, client_address: str) -> None:
        self.client_address = client_address
        self.user_id: str | None = None
        self.conversation_id: str | None = None
        self.by_secondary = False  # DIRECT_LINE_SECRET_SECONDARY served the Direct Line call
        self.counted = False  # the rate limiter counted the request (so a denial is not charged twice)


class TokenService:
    def __init__(
        self,
        settings: Settings,
        client: DirectLineClient,
        identity: Identity,
        limiter: RateLimiter,
        tickets: Tickets,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.client = client
        self.identity = identity
        self.limiter = limiter
        self.tickets = tickets
        self.refusals = origins.RefusalLog()
        self._clock = clock
        self._enhanced_auth_found = Notice(log, logging.ERROR)

    # -- routes -------------------------------------------------------------------------------

    def issue_token(self, request: Request) -> Response:
        return self._audited("directline.token", request, self._issue, "token")

    def refresh_token(self, request: Request) -> Response:
        return self._audited("directline.refresh", request, self._refresh, "refresh")

    def resume(self, request: Request) -> Response:
        return self._audited("directline.resume", request, self._resume, "token")

    def preflight(self, request: Request) -> Response:
        origin = request.header("origin")
        if origin is None:
            return Response(204, None, {"Allow": origins.CORS_ALLOW_METHODS, "Vary": "Origin"})
        if not origins.is_allowed(origin, self.settings.allowed_origins):
            self.refusals.refused(origin, "a preflight")
            return _varies(error_response(OriginNotAllowed()))
        return Response(204, None, origins.preflight_headers(origin))

    def health(self, request: Request) -> Response:
        """The settings are valid; and whether Direct Line is answering, as the circuit breaker has
        seen it (no call is made to find out)."""
        direct_line = "available" if self.client.breaker.available else "unavailable"
        body: dict[str, Any] = {"status": "ok", "directLine": direct_line}
        warnings = [problem.setting for problem in browser_problems(self.settings)]
        if warnings:
            body["warnings"] = warnings
        return self._with_cors(request, _varies(json_response(200, body)))

    def warm_up(self, *, past_due: bool) -> None:
        warmup.ping(self.settings.warmup_url, past_due=past_due)

    # -- steps --------------------------------------------------------------------------------

    def _issue(self, request: Request, outcome: _Outcome) -> Response:
        trusted_origins = self._check_origin(request)
        body = parse_token_body(request.body, request.header("content-type"))
        caller = self.identity.identify(request.headers, body, self._address_key(outcome.client_address))
        outcome.user_id = caller.user_id
        self._count(outcome, caller.limit_keys, "token")
        user: dict[str, Any] = {"id": caller.user_id}
        if caller.name:
            user["name"] = caller.name
        minted = self.client.generate(user, trusted_origins)
        answer, outcome.by_secondary = minted.answer, minted.by_secondary
        outcome.conversation_id = answer["conversationId"]
        payload = {**answer, "userId": caller.user_id, "domain": self.client.endpoint, **caller.answer_fields}
        ticket = self.tickets.issue(answer["conversationId"], caller.user_id)
        if ticket is not None:
            payload["conversationTicket"] = ticket
        return json_response(200, payload)

    def _resume(self, request: Request, outcome: _Outcome) -> Response:
        self._check_origin(request)
        body = parse_resume_body(request.body, request.header("content-type"))
        caller = self.identity.identify(request.headers, body, self._address_key(outcome.client_address))
        outcome.user_id = caller.user_id
        self._count(outcome, caller.limit_keys, "token")  # the same allowance as a new token
        if self.settings.direct_line_enhanced_auth:
            raise ResumeUnavailable()  # Direct Line would refuse the secret a reconnect: not asked
        ticket = self.tickets.read(body["conversationTicket"])
        outcome.conversation_id = ticket.conversation_id
        check_owner(ticket, caller.user_id)  # before Direct Line hears of it
        try:
            minted = self.client.reconnect(ticket.conversation_id)
        except ResumeUnavailable:
            self._enhanced_auth_found.write(
                "Direct Line refused to reconnect a conversation with the secret (HTTP 400): the site "
                "has Enhanced authentication options on, so conversations cannot be resumed and every "
                "resume is answered 409. Set DIRECT_LINE_ENHANCED_AUTH=true: then no conversationTicket "
                "is issued and pages start a new conversation for the same user at once"
            )
            raise
        answer, outcome.by_secondary = minted.answer, minted.by_secondary
        payload = {
            "conversationId": ticket.conversation_id,
            "token": answer["token"],
            "expires_in": answer.get("expires_in"),
            "userId": caller.user_id,
            "domain": self.client.endpoint,
            "conversationTicket": self.tickets.issue(ticket.conversation_id, caller.user_id),
            **caller.answer_fields,
        }
        return json_response(200, payload)

    def _refresh(self, request: Request, outcome: _Outcome) -> Response:
        self._check_origin(request)
        if len(request.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        token = bearer_token(request.headers)
        if token is None:
            raise Unauthorized("Send the Direct Line token to refresh as Authorization: Bearer <token>.")
        self._count(outcome, [self._address_key(outcome.client_address)], "refresh")
        answer = self.client.refresh(token)
        outcome.conversation_id = answer["conversationId"]
        payload = {
            "conversationId": answer["conversationId"],
            "token": answer.get("token"),
            "expires_in": answer.get("expires_in"),
            "domain": self.client.endpoint,
        }
        return json_response(200, payload)

    def _check_origin(self, request: Request) -> list[str]:
        """The request's Origin as Direct Line's trustedOrigins; refuse a disallowed one first."""
        origin = request.header("origin")
        if origin is None:
            return []
        if not origins.is_allowed(origin, self.settings.allowed_origins):
            self.refusals.refused(origin, "a POST")
            raise OriginNotAllowed()
        return [origin]

    def _address_key(self, client_address: str) -> str:
        """What a caller's network address is counted on (see tokens/clientip.py)."""
        return "ip:" + rate_limit_network(client_address, self.settings.rate_limit_ipv6_prefix)

    def _client_address(self, request: Request) -> str:
        return client_address(
            request.header("x-forwarded-for"), self.settings.trusted_proxy_hops, request.peer
        )

    def _count(self, outcome: _Outcome, keys: Sequence[str], pool: str) -> None:
        self.limiter.check(keys, pool)
        outcome.counted = True

    def _audited(
        self, event: str, request: Request, step: Callable[[Request, _Outcome], Response], pool: str
    ) -> Response:
        """Run one POST route's step: refused at once when its caller's address has spent its
        allowance, charged to that address when it is denied before it was counted (denials
        count too), and audited whatever the outcome."""
        started = self._clock()
        outcome = _Outcome(self._client_address(request))
        address_key = self._address_key(outcome.client_address)
        reason: str | None = None
        try:
            self.limiter.refuse_if_spent(address_key, pool)
            response = step(request, outcome)
        except ServiceError as error:
            if isinstance(error, RequestError) and not isinstance(error, RateLimited) and not outcome.counted:
                self.limiter.count_denial(address_key, pool)
            reason = error.code
            response = error_response(error)
        except Exception:
            # A bug must still answer in the documented shape and leave its audit line.
            log.exception("Unexpected failure in %s", event)
            reason = Misconfigured.code
            response = error_response(Misconfigured("The service failed unexpectedly."))
        response = _varies(self._with_cors(request, response))
        audit.emit(
            audit.build_record(
                event=event,
                status=response.status,
                user_id=outcome.user_id,
                conversation_id=outcome.conversation_id,
                auth_mode=self.identity.mode,
                origin=request.header("origin"),
                client_ip=for_audit(outcome.client_address, self.settings.audit_client_ip),
                reason=reason,
                duration_ms=(self._clock() - started) * 1000,
                invocation_id=request.invocation_id,
                by_secondary=outcome.by_secondary,
            )
        )
        return response

    def _with_cors(self, request: Request, response: Response) -> Response:
        """Every response to an allowed origin carries the CORS headers, errors included, so that
        the page can read them."""
        origin = request.header("origin")
        if origin is not None and origins.is_allowed(origin, self.settings.allowed_origins):
            response.headers.update(origins.cors_headers(origin))
        return response


class MisconfiguredService:
    """Stands in when the settings are invalid: health says which settings, POSTs fail loudly."""

    def __init__(self, error: SettingsError, *, clock: Callable[[], float] = time.perf_counter):
        self.error = error
        self._clock = clock

    def issue_token(self, request: Request) -> Response:
        return self._fail("directline.token", request)

    def refresh_token(self, request: Request) -> Response:
        return self._fail("directline.refresh", request)

    def resume(self, request: Request) -> Response:
        return self._fail("directline.resume", request)

    def preflight(self, request: Request) -> Response:
        return _varies(error_response(Misconfigured()))

    def health(self, request: Request) -> Response:
        return _varies(json_response(503, {"status": "misconfigured", "problems": self.error.setting_names}))

    def warm_up(self, *, past_due: bool) -> None:
        warmup.ping(None, past_due=past_due)  # the URL is a setting, and the settings are broken

    def _fail(self, event: str, request: Request) -> Response:
        started = self._clock()
        response = error_response(Misconfigured())
        audit.emit(
            audit.build_record(
                event=event,
                status=response.status,
                user_id=None,
                conversation_id=None,
                auth_mode="unknown",
                origin=request.header("origin"),
                client_ip=None,
                reason=Misconfigured.code,
                duration_ms=(self._clock() - started) * 1000,
                invocation_id=request.invocation_id,
            )
        )
        return response


def _varies(response: Response) -> Response:
    """Marks an answer that another Origin could change (its CORS headers), so that no cache
    between the browser and the service gives one origin's answer to another."""
    response.headers["Vary"] = "Origin"
    return response


def build_service(settings: Settings, *, concurrency: int = DEFAULT_CONCURRENCY) -> TokenService:
    """The service for these settings; `concurrency` is how many requests may call Direct Line at
    once, so that its connection pool keeps one warm connection for each."""
    endpoint = settings.direct_line_endpoint
    client = DirectLineClient(
        endpoint,
        settings.direct_line_secret,
        settings.upstream_timeout,
        secondary=settings.direct_line_secret_secondary,
        session=new_session(endpoint, pool_size=concurrency, ca_bundle=settings.ca_bundle),
    )
    # Counts of different bots sharing one Redis stay apart: the namespace is a digest of the key
    # derived from the secret (not the secret itself, and not reversible).
    namespace = hashlib.sha256(derive_handle_key(settings.direct_line_secret)).hexdigest()[:16]
    limiter = RateLimiter(
        settings.rate_limit, settings.global_rate_limit, settings.rate_limit_storage, namespace=namespace
    )
    # Under Enhanced authentication a ticket could never be redeemed: none is issued.
    ticket_ttl = 0 if settings.direct_line_enhanced_auth else settings.conversation_ttl
    tickets = Tickets(settings.user_handle_key, ticket_ttl)
    return TokenService(settings, client, build_identity(settings), limiter, tickets)


def service_for(loaded: Settings | SettingsError, *, concurrency: int = DEFAULT_CONCURRENCY) -> Service:
    """The process's service for the settings it read, or a stand-in that reports their problems."""
    if isinstance(loaded, SettingsError):
        return MisconfiguredService(loaded)
    try:
        return build_service(loaded, concurrency=concurrency)
    except Exception as exc:  # a value that validated but still cannot be used: fail loudly, audited
        log.error("The service could not start with these settings: %s", type(exc).__name__)
        return MisconfiguredService(SettingsError([Problem("STARTUP", type(exc).__name__)]))
