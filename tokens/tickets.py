"""Conversation tickets: what lets a page resume its conversation after the token has expired.

A ticket is a string this service signs (tokens/signed.py) that binds a conversation id to the user
id it was issued to, until CONVERSATION_TTL runs out. It has its own key, derived one way from the
user-handle key, and its own audience, so a ticket is never accepted as a user handle, nor a handle
as a ticket. Holding a ticket proves nothing by itself: the caller must also be identified as the
ticket's user (service.resume), so a stolen ticket is useless without that user's handle or sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import NamedTuple

from tokens import signed
from tokens.errors import InvalidTicket, TicketNotYours

TICKET_AUDIENCE = "directline-token-service/conversation-ticket"
_KEY_LABEL = b"directline-token-service/conversation-ticket-key/v1"


class Ticket(NamedTuple):
    conversation_id: str
    user_id: str


def derive_ticket_key(handle_key: bytes) -> bytes:
    return hmac.new(handle_key, _KEY_LABEL, hashlib.sha256).digest()


class Tickets:
    def __init__(self, handle_key: bytes, ttl: int, clock: Callable[[], float] = time.time) -> None:
        self._key = derive_ticket_key(handle_key)
        self.ttl = ttl  # 0: resuming is off, and no ticket is issued
        self._clock = clock

    def issue(self, conversation_id: str, user_id: str) -> str | None:
        if self.ttl == 0:
            return None
        now = int(self._clock())
        claims = {"sub": user_id, "cid": conversation_id, "aud": TICKET_AUDIENCE, "iat": now}
        return signed.sign({**claims, "exp": now + self.ttl}, self._key)

    def read(self, ticket: str) -> Ticket:
        """The conversation and user a ticket binds; InvalidTicket when forged, malformed, expired,
        or when resuming is off."""
        if self.ttl == 0:
            raise InvalidTicket("Resuming conversations is turned off here; start a new conversation.")
        try:
            claims = signed.verify(ticket, self._key, audience=TICKET_AUDIENCE, now=self._clock())
        except signed.Expired:
            raise InvalidTicket("The conversationTicket has expired; start a new conversation.") from None
        except signed.BadSignature:
            raise InvalidTicket() from None
        conversation_id = claims.get("cid")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise InvalidTicket()
        return Ticket(conversation_id, claims["sub"])


def check_owner(ticket: Ticket, user_id: str) -> None:
    """TicketNotYours unless the caller is the ticket's user (compared in constant time)."""
    if not hmac.compare_digest(ticket.user_id.encode(), user_id.encode()):
        raise TicketNotYours()
