"""Every error the service can answer with, each knowing its HTTP status and SPEC code.

The tree::

    ServiceError                        (status, code, message, retry_after)
    ├── RequestError                    4xx: the caller can fix it
    │   ├── InvalidRequest              400 invalid_request
    │   ├── Unauthorized                401 unauthorized
    │   ├── TokenExpired                401 token_expired
    │   ├── InvalidTicket               401 invalid_ticket
    │   ├── TicketNotYours              403 ticket_not_yours
    │   ├── OriginNotAllowed            403 origin_not_allowed
    │   ├── NotFound                    404 not_found            (hosted mode only)
    │   ├── SpeechNotConfigured         404 speech_not_configured
    │   ├── MethodNotAllowed            405 method_not_allowed   (hosted mode only)
    │   ├── ResumeUnavailable           409 resume_unavailable
    │   ├── ConversationGone            410 conversation_gone
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── UnsupportedMediaType        415 unsupported_media_type
    │   └── RateLimited                 429 rate_limited         (retry_after)
    └── ServerError                     5xx: the operator or Direct Line must fix it
        ├── Misconfigured               500 misconfigured
        ├── UpstreamError               502 upstream_error
        │   ├── SecretRefused            Direct Line refused the secret (401/403)
        │   └── WrongRegion              Direct Line's 403 RegionNotAllowed: another region's host
        ├── UpstreamUnavailable         503 upstream_unavailable (retry_after when known)
        └── UpstreamTimeout             504 upstream_timeout

Messages are written for the person fixing the request. They never contain a secret, a token or
Direct Line's own error body: callers build them from fixed text only.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The service failed."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    def to_json(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class RequestError(ServiceError):
    status = 400


class InvalidRequest(RequestError):
    status = 400
    code = "invalid_request"
    default_message = "The request body is not valid."


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"
    default_message = "The caller's credentials are missing or not valid."


class TokenExpired(RequestError):
    status = 401
    code = "token_expired"
    default_message = "The Direct Line token has expired or is not known; ask for a new one."


class InvalidTicket(RequestError):
    status = 401
    code = "invalid_ticket"
    default_message = (
        "The conversationTicket is not valid or has expired; start a new conversation with "
        "/api/directline/token."
    )


class TicketNotYours(RequestError):
    status = 403
    code = "ticket_not_yours"
    default_message = (
        "The conversationTicket belongs to another user; start a new conversation with "
        "/api/directline/token."
    )


class ResumeUnavailable(RequestError):
    status = 409
    code = "resume_unavailable"
    default_message = (
        "This bot's Direct Line site does not let conversations be resumed (Enhanced authentication); "
        "start a new conversation for the same user with /api/directline/token."
    )


class ConversationGone(RequestError):
    status = 410
    code = "conversation_gone"
    default_message = (
        "Direct Line no longer knows this conversation; start a new one with /api/directline/token."
    )


class OriginNotAllowed(RequestError):
    status = 403
    code = "origin_not_allowed"
    default_message = "This page's origin is not allowed to ask for tokens (see ALLOWED_ORIGINS)."


class NotFound(RequestError):
    status = 404
    code = "not_found"
    default_message = "There is nothing at this path."


class SpeechNotConfigured(RequestError):
    status = 404
    code = "speech_not_configured"
    default_message = "Speech is not configured for this service (SPEECH_REGION and a credential)."


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"
    default_message = "This path does not accept that method."


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"
    default_message = "The request body is larger than 4096 bytes."


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"
    default_message = "The request body must be sent as Content-Type: application/json."


class RateLimited(RequestError):
    status = 429
    code = "rate_limited"
    default_message = "Too many token requests; try again after the Retry-After delay."


class ServerError(ServiceError):
    status = 500


class Misconfigured(ServerError):
    status = 500
    code = "misconfigured"
    default_message = "The service is not configured correctly; the operator can see why in the log."


class UpstreamError(ServerError):
    status = 502
    code = "upstream_error"
    default_message = "Direct Line refused the request or answered in an unexpected way."


class SecretRefused(UpstreamError):
    """Direct Line refused the secret (401 or 403): the other key may still be accepted."""

    default_message = (
        "Direct Line refused the secret; check DIRECT_LINE_SECRET and DIRECT_LINE_ENDPOINT."
    )


class WrongRegion(UpstreamError):
    """Direct Line answered 403 RegionNotAllowed: the bot is regional and was asked through another
    region's host. The page sees a plain upstream_error; the log says which setting to change."""

    default_message = "Direct Line refused the request: the service is set up for another region."


class UpstreamUnavailable(ServerError):
    status = 503
    code = "upstream_unavailable"
    default_message = "Direct Line is unavailable or throttling; try again shortly."


class UpstreamTimeout(ServerError):
    status = 504
    code = "upstream_timeout"
    default_message = "Direct Line did not answer in time."
