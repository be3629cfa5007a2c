"""`python -m tokens check --live`: one real token minted with the configured secret and endpoint
(Direct Line opens a conversation for it, as for a visitor), and the outcome as one line in the
service's own error vocabulary. The token itself is never shown."""

from __future__ import annotations

import logging
import secrets
from typing import NamedTuple

from tokens.directline import DirectLineClient
from tokens.errors import ServiceError, UpstreamUnavailable
from tokens.settings import Settings
from tokens.text import one_line


class Outcome(NamedTuple):
    ok: bool
    line: str  # `ok: …`, or `<error code>: what happened and what to check`


def mint_one_token(settings: Settings) -> Outcome:
    client = DirectLineClient(
        settings.direct_line_endpoint, settings.direct_line_secret, settings.upstream_timeout
    )
    user_id = "dl_check-" + secrets.token_hex(8)
    quiet = logging.getLogger("tokens")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the retry's own log line: the outcome says it all
    try:
        answer = client.generate({"id": user_id}, [])
    except ServiceError as error:
        return Outcome(False, f"{error.code}: {_explained(error)}")
    except Exception as error:  # e.g. an unreadable CA bundle: still one line, never a traceback
        return Outcome(False, f"upstream_unavailable: the call could not be made ({type(error).__name__})")
    finally:
        quiet.setLevel(level)
        client.close()
    lifetime = answer.get("expires_in")
    conversation = one_line(str(answer.get("conversationId", "")))[:64]
    valid = f", valid for {lifetime} s" if lifetime is not None else ""
    minted = f"{settings.direct_line_endpoint} minted a token for {user_id}{valid}"
    return Outcome(True, f"ok: {minted} (conversation {conversation})")


def _explained(error: ServiceError) -> str:
    if isinstance(error, UpstreamUnavailable):
        if error.__cause__ is not None:  # no answer came: the call itself failed
            return (
                "Direct Line could not be reached or the connection failed (DNS, connection, proxy or "
                "TLS): check DIRECT_LINE_ENDPOINT and this machine's network"
            )
        when = f"try again in {error.retry_after} s" if error.retry_after is not None else "try again later"
        return f"Direct Line answered that it is throttling or busy (HTTP 429 or 503): {when}"
    if error.code == "upstream_timeout":
        return "Direct Line did not answer within UPSTREAM_TIMEOUT seconds"
    return error.message  # upstream_error: a refused secret names DIRECT_LINE_SECRET itself
