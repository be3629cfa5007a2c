"""The use cases: issue, refresh and resume tokens, answer a preflight, report health, warm up.

Orchestration only: each step is a call into the module that owns it, and every outcome of a POST,
good or bad, leaves exactly one audit record.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from tokens import audit, origins, warmup
from tokens.body import MAX_BODY_BYTES, parse_resume_body, parse_token_body
from tokens.clientip import Client, client_of
from tokens.directline import DirectLineClient, new_session
from tokens.errors import (
    ConversationGone,
    Misconfigured,
    OriginNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    ResumeUnavailable,
    ServiceError,
    SpeechNotConfigured,
    Unauthorized,
)
from tokens.http import Request, Response, error_response, json_response
from tokens.identity import Caller, Identity, bearer_token, build_identity
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
from tokens.speech import SpeechTokens, build_speech
from tokens.tickets import Tickets, check_owner

log = logging.getLogger("tokens.service")

_AUDIT_NOT_WRITTEN = (
    "The service cannot write its audit trail, so it issues nothing; the operator must fix its log."
)


class Service(Protocol):
    def issue_token(self, request: Request) -> Response: ...
    def refresh_token(self, request: Request) -> Response: ...
    def resume(self, request: Request) -> Response: ...
    def speech_token(self, request: Request) -> Response: ...
    def preflight(self, request: Request) -> Response: ...
    def health(self, request: Request) -> Response: ...
    def warm_up(self, *, past_due: bool) -> None: ...


class Facts(NamedTuple):
    """What one request is, worked out once, before anything else: where it comes from (the client
    address and what its allowance is counted on), and its Origin with the allow-list's verdict."""

    client: Client
    address_key: str  # `ip:<address or network>`: what the caller's address is counted on
    origin: str | None
    origin_allowed: bool  # also True when there is no Origin (a server, curl)


class _Outcome:
    """What the audit record needs to know, filled in as the request goes along."""

    __slots__ = ("admitted", "by_secondary", "conversation_id", "user_id")

    def __init__(self) -> None:
        self.user_id: str | None = None
        self.conversation_id: str | None = None
        self.by_secondary = False  # DIRECT_LINE_SECRET_SECONDARY served the Direct Line call
        self.admitted = False  # the rate limiter counted the request (so a denial is not charged twice)


Step = Callable[[Request, Facts, _Outcome], Response]


class TokenService:
    def __init__(
        self,
        settings: Settings,
        client: DirectLineClient,
        identity: Identity,
        limiter: RateLimiter,
        tickets: Tickets,
        *,
        speech: SpeechTokens | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.client = client
        self.identity = identity
        self.limiter = limiter
        self.tickets = tickets
        self.speech = speech  # None: speech is not configured
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

    def speech_token(self, request: Request) -> Response:
        # Its own pool: the page's speech credentials spend neither its allowance for new conversations
        # nor everyone's allowance for Direct Line tokens.
        return self._audited("speech.token", request, self._speech, "speech")

    def preflight(self, request: Request) -> Response:
        origin, allowed = self._origin(request)
        if origin is None:
            return Response(204, None, {"Allow": origins.CORS_ALLOW_METHODS, "Vary": "Origin"})
        if not allowed:
            self.refusals.refused(origin, "a preflight")
            return _varies(error_response(OriginNotAllowed()))
        return Response(204, None, origins.preflight_headers(origin))

    def health(self, request: Request) -> Response:
        """The settings are valid; and whether Direct Line is answering, as the circuit breaker has
        seen it (no call is made to find out)."""
        direct_line = "available" if self.client.breaker.available else "unavailable"
        if audit.trail_failing.is_set():
            # An instance that cannot write its audit trail issues nothing: take it out of rotation.
            failing = {"status": "failing", "auditLog": "not written", "directLine": direct_line}
            return _with_cors(*self._origin(request), json_response(503, failing))
        body: dict[str, Any] = {"status": "ok", "directLine": direct_line}
        warnings = [problem.setting for problem in browser_problems(self.settings)]
        if warnings:
            body["warnings"] = warnings
        return _with_cors(*self._origin(request), json_response(200, body))

    def warm_up(self, *, past_due: bool) -> None:
        warmup.ping(self.settings.warmup_url, past_due=past_due)

    def facts(self, request: Request) -> Facts:
        settings = self.settings
        client = client_of(request.header("x-forwarded-for"), settings.trusted_proxy_hops, request.peer)
        return Facts(client, client.limit_key(settings.rate_limit_ipv6_prefix), *self._origin(request))

    def _origin(self, request: Request) -> tuple[str | None, bool]:
        """The request's Origin and whether it is allowed (also when there is none: a server,
        curl); all that preflight and health need, without the client address."""
        origin = request.header("origin")
        return origin, origin is None or origins.is_allowed(origin, self.settings.allowed_origins)

    # -- steps: each raises a ServiceError to refuse ------------------------------------------

    def _issue(self, request: Request, facts: Facts, outcome: _Outcome) -> Response:
        body = parse_token_body(request.body, request.header("content-type"))
        caller = self.identity.identify(request.headers, body)
        outcome.user_id = caller.user_id
        self._admit(facts, caller, outcome, "token")
        user: dict[str, Any] = {"id": caller.user_id}
        if caller.name:
            user["name"] = caller.name
        trusted_origins = [facts.origin] if facts.origin is not None else []
        minted = self.client.generate(user, trusted_origins)
        answer, outcome.by_secondary = minted.answer, minted.by_secondary
        outcome.conversation_id = answer["conversationId"]
        payload = {**answer, "userId": caller.user_id, "domain": self.client.endpoint, **caller.answer_fields}
        ticket = self.tickets.issue(answer["conversationId"], caller.user_id)
        if ticket is not None:
            payload["conversationTicket"] = ticket
        return json_response(200, payload)

    def _resume(self, request: Request, facts: Facts, outcome: _Outcome) -> Response:
        body = parse_resume_body(request.body, request.header("content-type"))
        caller = self.identity.identify(request.headers, body)
        outcome.user_id = caller.user_id
        if self.settings.direct_line_enhanced_auth:
            raise ResumeUnavailable()  # Direct Line would refuse the secret a reconnect: not asked
        # Every check that can refuse comes before the request is admitted (counted against the same
        # allowance as a new token): no denial spends everyone's global allowance.
        ticket = self.tickets.read(body["conversationTicket"])
        outcome.conversation_id = ticket.conversation_id
        check_owner(ticket, caller.user_id)  # before Direct Line hears of it
        self._admit(facts, caller, outcome, "token")
        try:
            minted = self.client.reconnect(ticket.conversation_id)
        except (ConversationGone, ResumeUnavailable) as refused:
            self.limiter.give_back("token")  # Direct Line refused: a denial after all
            if isinstance(refused, ResumeUnavailable):
                self._enhanced_auth_found.write(
                    "Direct Line refused to reconnect a conversation with the secret (HTTP 400): the "
                    "site has Enhanced authentication options on, so conversations cannot be resumed "
                    "and every resume is answered 409. Set DIRECT_LINE_ENHANCED_AUTH=true: then no "
                    "conversationTicket is issued and pages start a new conversation for the same user "
                    "at once"
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

    def _speech(self, request: Request, facts: Facts, outcome: _Outcome) -> Response:
        if self.speech is None:
            raise SpeechNotConfigured()
        body = parse_token_body(request.body, request.header("content-type"))
        caller = self.identity.identify(request.headers, body)
        outcome.user_id = caller.user_id
        self._admit(facts, caller, outcome, "speech")
        token, seconds_left = self.speech.current()
        return json_response(
            200, {"authorizationToken": token, "region": self.speech.region, "expires_in": seconds_left}
        )

    def _refresh(self, request: Request, facts: Facts, outcome: _Outcome) -> Response:
        if len(request.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        token = bearer_token(request.headers)
        if token is None:
            raise Unauthorized("Send the Direct Line token to refresh as Authorization: Bearer <token>.")
        self.limiter.admit([facts.address_key], "refresh")
        outcome.admitted = True
        answer = self.client.refresh(token)
        outcome.conversation_id = answer["conversationId"]
        payload = {
            "conversationId": answer["conversationId"],
            "token": answer.get("token"),
            "expires_in": answer.get("expires_in"),
            "domain": self.client.endpoint,
        }
        return json_response(200, payload)

    def _check_origin(self, facts: Facts) -> None:
        """Refuse a disallowed Origin first, before anything else is read."""
        if not facts.origin_allowed and facts.origin is not None:
            self.refusals.refused(facts.origin, "a POST")
            raise OriginNotAllowed()

    def _admit(self, facts: Facts, caller: Caller, outcome: _Outcome, pool: str) -> None:
        """Count the request against its caller's allowance (by address, user id or both) and
        everyone's; RateLimited when either is spent."""
        keys = [facts.address_key] if caller.by_address else []
        if caller.user_key is not None:
            keys.append(caller.user_key)
        self.limiter.admit(keys, pool)
        outcome.admitted = True

    def _audited(self, event: str, request: Request, step: Step, pool: str) -> Response:
        """Run one POST route's step: refused at once when its caller's address has spent its
        allowance, charged to that address when it is denied before it was admitted (denials
        count too), and audited whatever the outcome."""
        started = self._clock()
        facts = self.facts(request)
        outcome = _Outcome()
        reason: str | None = None
        try:
            self.limiter.refuse_if_spent(facts.address_key, pool)
            self._check_origin(facts)
            response = step(request, facts, outcome)
        except ServiceError as error:
            denied = isinstance(error, RequestError) and not isinstance(error, RateLimited)
            if denied and not outcome.admitted:
                self.limiter.count_denial(facts.address_key, pool)
            reason = error.code
            response = error_response(error)
        except Exception:
            # A bug must still answer in the documented shape and leave its audit line.
            log.exception("Unexpected failure in %s", event)
            reason = Misconfigured.code
            response = error_response(Misconfigured("The service failed unexpectedly."))
        record = audit.build_record(
            event=event,
            status=response.status,
            user_id=outcome.user_id,
            conversation_id=outcome.conversation_id,
            auth_mode=self.identity.mode,
            origin=facts.origin,
            client_ip=facts.client.for_audit(self.settings.audit_client_ip),
            reason=reason,
            duration_ms=(self._clock() - started) * 1000,
            invocation_id=request.invocation_id,
            by_secondary=outcome.by_secondary,
        )
        try:
            audit.emit(record)
        except audit.AuditNotWritten:
            # No token leaves without its audit record: the caller gets the error instead.
            response = error_response(Misconfigured(_AUDIT_NOT_WRITTEN))
        return _with_cors(facts.origin, facts.origin_allowed, response)


def _with_cors(origin: str | None, allowed: bool, response: Response) -> Response:
    """Every response to an allowed origin carries the CORS headers, errors included, so that the
    page can read them; and every one says that another Origin could change it."""
    if origin is not None and allowed:
        response.headers.update(origins.cors_headers(origin))
    return _varies(response)


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

    def speech_token(self, request: Request) -> Response:
        return self._fail("speech.token", request)

    def preflight(self, request: Request) -> Response:
        return _varies(error_response(Misconfigured()))

    def health(self, request: Request) -> Response:
        return _varies(json_response(503, {"status": "misconfigured", "problems": self.error.setting_names}))

    def warm_up(self, *, past_due: bool) -> None:
        warmup.ping(None, past_due=past_due)  # the URL is a setting, and the settings are broken

    def _fail(self, event: str, request: Request) -> Response:
        started = self._clock()
        record = audit.build_record(
            event=event,
            status=Misconfigured.status,
            user_id=None,
            conversation_id=None,
            auth_mode="unknown",
            origin=request.header("origin"),
            client_ip=None,
            reason=Misconfigured.code,
            duration_ms=(self._clock() - started) * 1000,
            invocation_id=request.invocation_id,
        )
        with contextlib.suppress(audit.AuditNotWritten):  # it answers the error either way
            audit.emit(record)
        return error_response(Misconfigured())


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
        settings.rate_limit,
        settings.global_rate_limit,
        settings.rate_limit_storage,
        namespace=namespace,
        identity_client_id=settings.azure_client_id,
    )
    # Under Enhanced authentication a ticket could never be redeemed: none is issued.
    ticket_ttl = 0 if settings.direct_line_enhanced_auth else settings.conversation_ttl
    tickets = Tickets(settings.user_handle_key, ticket_ttl)
    speech = build_speech(settings)
    return TokenService(settings, client, build_identity(settings), limiter, tickets, speech=speech)


def service_for(loaded: Settings | SettingsError, *, concurrency: int = DEFAULT_CONCURRENCY) -> Service:
    """The process's service for the settings it read, or a stand-in that reports their problems."""
    if isinstance(loaded, SettingsError):
        return MisconfiguredService(loaded)
    try:
        return build_service(loaded, concurrency=concurrency)
    except Exception as exc:  # a value that validated but still cannot be used: fail loudly, audited
        log.error("The service could not start with these settings: %s", type(exc).__name__)
        return MisconfiguredService(SettingsError([Problem("STARTUP", type(exc).__name__)]))
