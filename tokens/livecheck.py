"""`python -m tokens check --live`: the configured secret and endpoint tried for real, each outcome
as one line in the service's own error vocabulary. The token itself is never shown, nor a secret, nor
Direct Line's own words.

1. One token minted with DIRECT_LINE_SECRET (Direct Line opens a conversation for it, as for a
   visitor).
2. That conversation reconnected with the secret, as `/resume` does: whether resuming works on this
   Direct Line site (a `400` means Enhanced authentication options are on).
3. With DIRECT_LINE_SECRET_SECONDARY set, one token minted with it too.
4. With speech configured, one speech token.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from typing import NamedTuple

from tokens.directline import DirectLineClient
from tokens.errors import ResumeUnavailable, SecretRefused, ServiceError, UpstreamUnavailable, WrongRegion
from tokens.settings import DIRECT_LINE_ENDPOINTS, Settings
from tokens.speech import build_speech
from tokens.text import one_line


class Outcome(NamedTuple):
    ok: bool
    line: str  # `ok: …` or `note: …`, or `<error code>: what happened and what to check`


def run_live_checks(settings: Settings) -> list[Outcome]:
    """Every live check that applies, in order; a check that needs a conversation is skipped when
    none could be opened."""
    with _quiet_logs():
        primary = _client(settings, settings.direct_line_secret)
        try:
            outcome, conversation = _mint(primary, settings, "DIRECT_LINE_SECRET")
            outcomes = [outcome]
            if conversation is not None:
                outcomes.append(_resume(primary, settings, conversation))
        finally:
            primary.close()
        if settings.direct_line_secret_secondary:
            secondary = _client(settings, settings.direct_line_secret_secondary)
            try:
                outcomes.append(_mint(secondary, settings, "DIRECT_LINE_SECRET_SECONDARY")[0])
            finally:
                secondary.close()
        speech = _speech(settings)
        if speech is not None:
            outcomes.append(speech)
    return outcomes


def _speech(settings: Settings) -> Outcome | None:
    """One speech token with the configured credential, or None when speech is not configured."""
    tokens = build_speech(settings)
    if tokens is None:
        return None
    credential = "SPEECH_RESOURCE_ID (the managed identity)" if settings.speech_resource_id else "SPEECH_KEY"
    try:
        _, seconds = tokens.current()
    except ServiceError as error:
        return Outcome(False, f"{error.code}: speech: {error.message} (check {credential} and SPEECH_REGION)")
    except Exception as error:
        return _call_failed(error)
    return Outcome(True, f"ok: speech: a token for {tokens.region} with {credential}, valid for {seconds} s")


def _client(settings: Settings, secret: str) -> DirectLineClient:
    return DirectLineClient(settings.direct_line_endpoint, secret, settings.upstream_timeout)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """The service's own log lines (a retry, a notice) would repeat what the outcome says."""
    quiet = logging.getLogger("tokens")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quiet.setLevel(level)


def _mint(client: DirectLineClient, settings: Settings, setting: str) -> tuple[Outcome, str | None]:
    user_id = "dl_check-" + secrets.token_hex(8)
    try:
        answer = client.generate({"id": user_id}, []).answer
    except ServiceError as error:
        return Outcome(False, f"{error.code}: {_explained(error, setting)}"), None
    except Exception as error:  # e.g. an unreadable CA bundle: still one line, never a traceback
        return _call_failed(error), None
    lifetime = answer.get("expires_in")
    conversation = one_line(str(answer.get("conversationId", "")))[:64]
    valid = f", valid for {lifetime} s" if lifetime is not None else ""
    minted = f"{settings.direct_line_endpoint} minted a token for {user_id} with {setting}{valid}"
    return Outcome(True, f"ok: {minted} (conversation {conversation})"), conversation


def _resume(client: DirectLineClient, settings: Settings, conversation: str) -> Outcome:
    enhanced = settings.direct_line_enhanced_auth
    try:
        client.reconnect(conversation)
    except ResumeUnavailable:
        if enhanced:
            return Outcome(
                True,
                "ok: resuming is unavailable here (Enhanced authentication options are on), as "
                "DIRECT_LINE_ENHANCED_AUTH=true says: pages start a new conversation for the same user",
            )
        return Outcome(
            False,
            "resume_unavailable: Direct Line refused to reconnect the conversation with the secret "
            "(HTTP 400): this Direct Line site has Enhanced authentication options on. Set "
            "DIRECT_LINE_ENHANCED_AUTH=true, so that no conversationTicket is issued and pages start "
            "a new conversation for the same user at once",
        )
    except ServiceError as error:
        return Outcome(False, f"{error.code}: reconnecting failed: {_explained(error, 'DIRECT_LINE_SECRET')}")
    except Exception as error:
        return _call_failed(error)
    if enhanced:
        return Outcome(
            True,
            "note: resuming works on this Direct Line site, but DIRECT_LINE_ENHANCED_AUTH=true turns "
            "it off: set it to false to let pages resume their conversations",
        )
    return Outcome(True, "ok: resuming works: Direct Line reconnected that conversation with the secret")


def _call_failed(error: Exception) -> Outcome:
    return Outcome(False, f"upstream_unavailable: the call could not be made ({type(error).__name__})")


def _explained(error: ServiceError, setting: str) -> str:
    if isinstance(error, WrongRegion):
        return (
            "region mismatch: Direct Line answered RegionNotAllowed, so the bot's Direct Line lives in "
            "another region than DIRECT_LINE_ENDPOINT serves. Set DIRECT_LINE_ENDPOINT to the endpoint "
            f"of the bot's region: {', '.join(DIRECT_LINE_ENDPOINTS)}"
        )
    if isinstance(error, SecretRefused):
        return f"Direct Line refused {setting}: check it, and that DIRECT_LINE_ENDPOINT is the bot's region"
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
    return error.message
