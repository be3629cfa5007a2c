"""A Direct Line 3.0 emulator with an echo bot.

    ***********************************************************************
    *  THIS IS AN EMULATOR FOR DEMOS AND TESTS. IT IS NOT AZURE BOT       *
    *  SERVICE AND NOT DIRECT LINE. It keeps everything in memory, serves *
    *  plain HTTP, has no bot behind it but an echo, and must never be    *
    *  exposed beyond the loopback interface.                             *
    ***********************************************************************

`DirectLineEmulator(secret)` is a WSGI application that answers under `/v3/directline` the routes a
token service and Bot Framework Web Chat use, so that `python -m tokens serve --demo` and the tests
run end to end without Azure:

    POST /tokens/generate                 secret          -> 200 {conversationId, token, expires_in}
    POST /tokens/refresh                  token           -> 200 {conversationId, token, expires_in}
    POST /conversations                   token or secret -> 201 {the same, streamUrl}
    GET  /conversations/{id}?watermark=W  token or secret -> 200 {the same, streamUrl}
    GET  /conversations/{id}/activities?watermark=W       -> 200 {activities, watermark}
    POST /conversations/{id}/activities   -> 200 {id}; stores the activity and the bot's echo
    GET  /conversations/{id}/stream?watermark=W&t=...     -> the WebSocket stream (demo/stream.py)

The WebSocket stream is Web Chat's default transport. A WSGI application cannot take a connection
over, so the stream itself is served by demo/stream.py on the raw socket; this class grants it
(`grant_stream`) and hands it the activities (`activities_after`, `watch`). What Direct Line
documents of it (the Direct Line 3.0 pages on starting a conversation, reconnecting and receiving
activities), and what the emulator does:

- `streamUrl` comes with starting a conversation and with every reconnect, and must be connected
  to within 60 seconds; it carries its own credential (`t`), so the upgrade needs no Authorization.
- The stream sends an ActivitySet `{"activities": [...], "watermark": "N"}` for each batch, and empty
  messages now and then to keep the connection alive; it ignores what the client sends (Web Chat
  sends empty messages too).
- Replay: a conversation's first stream replays everything (what was sent before the socket
  opened is not lost); a reconnect with a watermark replays what came after it. A reconnect with no
  watermark replays the whole conversation, as Direct Line has done since 2021 (its streamUrl then
  says `watermark=-`: BotFramework-Services #289 and #319, BotFramework-DirectLineJS #338), which is
  what lets a page show its history again after a reload.
- One stream per conversation: a new one closes the one before with the reason `collision`.
- Direct Line "may forcibly close the WebSocket connection under certain conditions", and the
  client then asks for a new streamUrl. The emulator closes a stream when a token of the
  conversation minted as the stream URL was would expire (`token_ttl` after the URL was made): a
  client that kept its token fresh reconnects at once; one whose token expired (a laptop that
  slept) learns so from the reconnect's 403, as it would from Direct Line.

Credentials travel as `Authorization: Bearer ...`; the secret is compared in constant time.

The variants users meet, as options (each modelled on Direct Line's public record; tests/fakes.py
cites the sources):

- `secondary`: the site's other secret key; either key mints and reconnects.
- `enhanced_auth`: *Enhanced authentication options* on: a reconnect made with a secret is `400
  {"error": {"code": "MissingProperty", "message": "Missing user ID"}}`; one made with the
  conversation's token still works.
- `wrong_region`: the bot is regional (Europe) and is asked through another region's host: every
  call is `403 {"error": {"code": "RegionNotAllowed", ...}}`.
- `token_ttl`: the tokens' lifetime; 1800 s as in Direct Line's documented examples, 3600 s as
  Copilot Studio agents' tokens, or a few seconds to watch expiry and resuming.

Tokens are HS256 JWTs signed with a key derived from the secret, with the claims `conv`, `user`,
`iat`, `exp` (and `name` when known). As in Direct Line, a bad or missing credential, an expired
token, or a token of another conversation is `403`; an unknown conversation is `404`; errors are
JSON `{"error": {"code", "message"}}`. CORS is open (`Access-Control-Allow-Origin: *`) as in Direct
Line: tokens travel in `Authorization`, never in cookies. State is bounded: the oldest conversation
and the oldest activities are evicted beyond `max_conversations` and `max_activities`. Activity ids
are `{conversationId}|{seq:07d}` and a watermark is the `seq` of the last activity returned.

What Web Chat 4.18.1 does against this API, read from the botframework-directlinejs 0.15.5 that its
bundle (`botframework-webchat/dist/webchat.js`) carries:

- `createDirectLine({token, domain, conversationId, watermark, webSocket})` is `new DirectLine(...)`;
  `webSocket` is true unless the page says false; its `watermark` property holds the last watermark
  received.
- Connecting with a `conversationId` is `GET {domain}/conversations/{id}?watermark={watermark}` (an
  empty `watermark=` when none); without one it is `POST {domain}/conversations` with the body
  `{"user": {}, "locale": ...}`. Headers: `Accept` and `Content-Type: application/json`,
  `Authorization: Bearer <token>`, `x-ms-bot-agent: DirectLine/3.0 (directlinejs 0.15.5; ...)`.
  The answer's `token` replaces the client's token, and its `streamUrl` is opened with the
  browser's WebSocket. Any 4xx/5xx here is FailedToConnect.
- WebSocket: `message.data && JSON.parse(message.data)`: empty messages are skipped, every other is
  an ActivitySet. The client sends an empty message every 20 s. When the socket closes, it waits 3 to
  15 s and reconnects (`GET {domain}/conversations/{id}?watermark={w}`) for a new `streamUrl`; a 403
  there is ExpiredToken, a 404 Ended.
- Polling (`webSocket: false`): every `pollingInterval` (1000 ms)
  `GET {domain}/conversations/{id}/activities?watermark={w}` with `Accept`, `Authorization`,
  `x-ms-bot-agent`. The answer is `{"activities": [...], "watermark"}`; a truthy watermark is kept
  for the next poll (and is the `watermark` property). 403 means ExpiredToken (polling goes on),
  404 means the conversation Ended.
- Sending: `POST {domain}/conversations/{id}/activities`; the answer's `id` is read. Web Chat shows
  the message as sent only when it comes back through polling with the same
  `channelData.clientActivityID` and an `id`, so the user's activity is echoed back with its
  `channelData` intact.
- Web Chat takes the user id from the token's `user` claim (jwt-decode) and shows activities whose
  `from.id` equals it as the user's own, so `user` holds the bare id string.
- The client refreshes its token by itself every 15 minutes: `POST {domain}/tokens/refresh` with
  only the Authorization header, and reads `token` from the answer.
- Not emulated: file uploads (`POST .../upload`, multipart) and `GET /session/getsessionid` (OAuth
  cards); both are 404 here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import parse_qs, quote, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import jwt

JsonObject = dict[str, Any]

PATH_PREFIX: Final = "/v3/directline"
SPEECH_STS_PATH: Final = "/sts/v1.0/issueToken"
MAX_BODY_BYTES: Final = 64 * 1024
BOT_ACCOUNT: Final = {"id": "bot", "name": "Echo bot", "role": "bot"}
WELCOME_TEXT: Final = (
    "Hello! I am the echo bot of the Direct Line emulator (a demo, not Azure). "
    "Say something and I will repeat it."
)
_ISSUER: Final = "directline-emulator"
_STREAM_AUDIENCE: Final = "directline-emulator/stream"
STREAM_CONNECT_SECONDS: Final = 60  # Direct Line: "You have 60 seconds to connect to the stream URL"
REPLAY_ALL: Final = "-"  # the watermark of a streamUrl that replays the whole conversation
_REGION_NOT_ALLOWED: Final = (
    "The request received in unitedkingdom but target regional bot belongs to europe. Please check "
    "BaseURI https://docs.microsoft.com/azure/bot-service/rest-api/"
    "bot-framework-rest-direct-line-3-0-api-reference#base-uri."
)
_TOKEN_KEY_LABEL: Final = b"directline-emulator/token-signing/v1"
_ALLOWED_HEADERS: Final = "Authorization, Content-Type, Accept, x-ms-bot-agent, x-requested-with"
_HEADER_LIST = re.compile(r"^[A-Za-z0-9-]+(\s*,\s*[A-Za-z0-9-]+)*$")
_CONVERSATION_ID = r"(?P<conversation_id>[A-Za-z0-9_-]{1,128})"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class EmulatorError(Exception):
    """An answer other than success; becomes `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)


@dataclass(frozen=True)
class Fault:
    """A scripted failure for tests: the next matching call sleeps `delay`, then answers `status`.

    `status=None` only delays and then answers normally (a slow Direct Line).
    """

    status: int | None = 503
    delay: float = 0.0
    retry_after: str | None = None


@dataclass(frozen=True)
class ConversationInfo:
    """What a test may inspect about a conversation; deliberately holds no token."""

    conversation_id: str
    user_id: str
    user_name: str | None
    trusted_origins: tuple[str, ...]
    activity_count: int


@dataclass(frozen=True)
class _Claims:
    conversation_id: str
    user_id: str
    user_name: str | None


@dataclass
class _Conversation:
    conversation_id: str
    user_id: str
    user_name: str | None
    trusted_origins: tuple[str, ...]
    activities: deque[JsonObject]
    next_sequence: int = 0
    watchers: list[StreamWatcher] = field(default_factory=list)


class StreamWatcher(Protocol):
    """An open stream of a conversation (demo/stream.py), told when there is something new."""

    def wake(self) -> None: ...
    def collide(self) -> None: ...


class StreamGrant(NamedTuple):
    """What a stream URL lets its holder read: a conversation, after a sequence number (-1: all),
    for `lifetime` seconds."""

    conversation_id: str
    after: int
    lifetime: float


@dataclass(frozen=True)
class _Request:
    params: dict[str, str]
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes
    stream_base: str  # ws(s)://host/v3/directline, where this request's client reaches the stream


@dataclass
class _Response:
    status: int
    body: JsonObject | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None  # a plain-text body instead of JSON (issueToken's)


Handler = Callable[[_Request], _Response]


def derive_token_key(secret: str) -> bytes:
    """The token signing key: bound to the secret, so rotating the secret retires every token."""
    return hmac.new(secret.encode("utf-8"), _TOKEN_KEY_LABEL, hashlib.sha256).digest()


class DirectLineEmulator:
    """WSGI app emulating Direct Line 3.0 with an echo bot (see the module docstring)."""

    def __init__(
        self,
        secret: str,
        *,
        secondary: str | None = None,
        enhanced_auth: bool = False,
        wrong_region: bool = False,
        public_endpoint: str | None = None,
        speech_key: str | None = None,
        token_ttl: int = 1800,
        clock: Callable[[], float] = time.time,
        max_conversations: int = 1000,
        max_activities: int = 500,
        welcome: bool = True,
    ) -> None:
        if not secret:
            raise ValueError("the emulator needs a non-empty secret")
        if token_ttl <= 0 or max_conversations <= 0 or max_activities <= 0:
            raise ValueError("token_ttl, max_conversations and max_activities must be positive")
        self._secrets = [key.encode("utf-8") for key in (secret, secondary) if key]
        self._enhanced_auth = enhanced_auth
        self._wrong_region = wrong_region
        # Where browsers reach this emulator (the demo's page port), when it is not where they sent
        # the request; by default the request's own Host.
        self._public_endpoint = public_endpoint
        self._speech_key = speech_key.encode() if speech_key else None
        self._key = derive_token_key(secret)
        self._token_ttl = token_ttl
        self._clock = clock
        self._max_conversations = max_conversations
        self._max_activities = max_activities
        self._welcome = welcome
        self._lock = threading.Lock()
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._faults: dict[str, deque[Fault]] = {}
        self._calls: dict[str, int] = {}
        self._routes: list[tuple[re.Pattern[str], str, dict[str, Handler]]] = [
            (re.compile(r"^/tokens/generate$"), "generate", {"POST": self._generate}),
            (re.compile(r"^/tokens/refresh$"), "refresh", {"POST": self._refresh}),
            (re.compile(r"^/conversations$"), "start", {"POST": self._start}),
            (
                re.compile(rf"^/conversations/{_CONVERSATION_ID}$"),
                "reconnect",
                {"GET": self._reconnect},
            ),
            (
                re.compile(rf"^/conversations/{_CONVERSATION_ID}/activities$"),
                "activities",
                {"GET": self._get_activities, "POST": self._post_activity},
            ),
        ]

    # ---- test hooks --------------------------------------------------------------------------

    def fail_next(self, route: str, *faults: Fault) -> None:
        """Queue faults for the next calls of `route` (`generate`, `refresh`, `start`, ...)."""
        if route not in {name for _, name, _ in self._routes}:
            raise ValueError(f"unknown route {route!r}")
        with self._lock:
            self._faults.setdefault(route, deque()).extend(faults)

    def call_count(self, route: str) -> int:
        """How many requests reached `route`, faults included; lets tests see retries."""
        with self._lock:
            return self._calls.get(route, 0)

    def conversation(self, conversation_id: str) -> ConversationInfo | None:
        with self._lock:
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                return None
            return ConversationInfo(
                conversation_id=conversation.conversation_id,
                user_id=conversation.user_id,
                user_name=conversation.user_name,
                trusted_origins=conversation.trusted_origins,
                activity_count=len(conversation.activities),
            )

    def conversation_count(self) -> int:
        with self._lock:
            return len(self._conversations)

    # ---- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        # A dispatcher may have moved part of the path into SCRIPT_NAME; the full path counts.
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        try:
            response = self._dispatch(method, path, environ)
        except EmulatorError as error:
            response = _error_response(error)
        except Exception:  # a WSGI app answers 500 rather than dropping the connection
            response = _error_response(
                EmulatorError(500, "ServiceError", "The emulator failed to handle the request.")
            )
        return _send(response, start_response)

    def _dispatch(self, method: str, path: str, environ: WSGIEnvironment) -> _Response:
        if path == SPEECH_STS_PATH and self._speech_key is not None:
            return self._speech_token(method, environ)
        if not path.startswith(PATH_PREFIX + "/"):
            raise EmulatorError(404, "NotFound", "No such Direct Line route.")
        route_path = path[len(PATH_PREFIX) :]
        if self._wrong_region and method != "OPTIONS":
            raise EmulatorError(403, "RegionNotAllowed", _REGION_NOT_ALLOWED)
        for pattern, name, handlers in self._routes:
            match = pattern.match(route_path)
            if match is None:
                continue
            if method == "OPTIONS":
                return _preflight(environ)
            handler = handlers.get(method)
            if handler is None:
                allowed = ", ".join([*handlers, "OPTIONS"])
                raise EmulatorError(405, "MethodNotAllowed", f"Use {allowed}.", [("Allow", allowed)])
            self._count_and_apply_fault(name)
            return handler(_read_request(method, match.groupdict(), environ, self._public_endpoint))
        raise EmulatorError(404, "NotFound", "No such Direct Line route.")

    def _count_and_apply_fault(self, route: str) -> None:
        with self._lock:
            self._calls[route] = self._calls.get(route, 0) + 1
            queue = self._faults.get(route)
            fault = queue.popleft() if queue else None
        if fault is None:
            return
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.status is not None:
            headers = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
            raise EmulatorError(fault.status, "InjectedFault", "A fault injected by a test.", headers)

    # ---- routes ------------------------------------------------------------------------------

    def _generate(self, request: _Request) -> _Response:
        self._require_secret(request.authorization)
        body = _json_object(request.body, allow_empty=True)
        user_id, user_name = _parse_user(body.get("user"))
        trusted_origins = _parse_origins(body.get("trustedOrigins"))
        conversation = self._create_conversation(user_id, user_name, trusted_origins)
        claims = _Claims(conversation.conversation_id, conversation.user_id, conversation.user_name)
        return _Response(200, self._conversation_answer(claims))

    def _refresh(self, request: _Request) -> _Response:
        claims = self._verify_token(_bearer(request.authorization))
        return _Response(200, self._conversation_answer(claims))

    def _start(self, request: _Request) -> _Response:
        credential = _bearer(request.authorization)
        if self._is_secret(credential):
            # Only the secret may open a conversation of its choosing, as in Direct Line.
            body = _json_object(request.body, allow_empty=True)
            user_id, user_name = _parse_user(body.get("user"))
            conversation = self._create_conversation(user_id, user_name, ())
            claims = _Claims(conversation.conversation_id, conversation.user_id, user_name)
        else:
            claims = self._verify_token(credential)
            self._require_conversation(claims.conversation_id)
        answer = self._conversation_answer(claims)
        return _Response(201, {**answer, "streamUrl": self._stream_url(request, claims.conversation_id, -1)})

    def _reconnect(self, request: _Request) -> _Response:
        conversation_id = request.params["conversation_id"]
        if self._enhanced_auth and self._is_secret(_bearer(request.authorization)):
            # A secret carries no user id, and Enhanced authentication wants one.
            raise EmulatorError(400, "MissingProperty", "Missing user ID")
        claims = self._authorize(request.authorization, conversation_id)
        watermark = _parse_watermark(request.query)
        self._require_conversation(conversation_id)
        answer = self._conversation_answer(claims)
        return _Response(200, {**answer, "streamUrl": self._stream_url(request, conversation_id, watermark)})

    def _get_activities(self, request: _Request) -> _Response:
        conversation_id = request.params["conversation_id"]
        self._authorize(request.authorization, conversation_id)
        watermark = _parse_watermark(request.query)
        with self._lock:
            conversation = self._find(conversation_id)
            activities = [a for a in conversation.activities if _sequence(a) > watermark]
        body: JsonObject = {"activities": activities}
        if activities:
            body["watermark"] = str(_sequence(activities[-1]))
        elif watermark >= 0:
            body["watermark"] = str(watermark)
        return _Response(200, body)

    def _post_activity(self, request: _Request) -> _Response:
        conversation_id = request.params["conversation_id"]
        claims = self._authorize(request.authorization, conversation_id)
        activity = _json_object(request.body, allow_empty=False)
        if not isinstance(activity.get("type"), str) or not activity["type"]:
            raise EmulatorError(400, "MissingProperty", "The activity needs a string 'type'.")
        with self._lock:
            conversation = self._find(conversation_id)
            sender = {"id": claims.user_id, "role": "user"}
            if claims.user_name:
                sender["name"] = claims.user_name
            stored = self._append(conversation, {**activity, "from": sender, "recipient": BOT_ACCOUNT})
            if stored["type"] == "message":
                self._append(conversation, _echo_reply(stored))
            watchers = list(conversation.watchers)
        for watcher in watchers:
            watcher.wake()
        return _Response(200, {"id": stored["id"]})

    # ---- Azure AI Speech's issueToken, so that the page's microphone can be tried ---------------

    def _speech_token(self, method: str, environ: WSGIEnvironment) -> _Response:
        """A stand-in for `POST /sts/v1.0/issueToken`: a token-shaped JWT for the demo's speech key.
        It lets the page show and wire its microphone; recognition itself needs Azure."""
        if method != "POST":
            raise EmulatorError(405, "MethodNotAllowed", "Use POST.", [("Allow", "POST")])
        given = str(environ.get("HTTP_OCP_APIM_SUBSCRIPTION_KEY", "")).encode()
        if self._speech_key is None or not hmac.compare_digest(given, self._speech_key):
            raise EmulatorError(401, "Unauthorized", "Invalid subscription key.")
        now = int(self._clock())
        claims = {"iss": _ISSUER, "region": "demo", "iat": now, "exp": now + 600}
        token = jwt.encode(claims, self._key, algorithm="HS256")
        return _Response(200, None, [("Content-Type", "text/plain")], text=token)

    # ---- the WebSocket stream (served by demo/stream.py) ----------------------------------------

    def grant_stream(self, target: str) -> StreamGrant:
        """What the stream URL `target` (path and query) may read; EmulatorError 403 for a missing,
        forged or stale `t`, 404 for another path or a conversation that is gone."""
        parts = urlsplit(target)
        match = re.fullmatch(rf"{PATH_PREFIX}/conversations/{_CONVERSATION_ID}/stream", parts.path)
        if match is None:
            raise EmulatorError(404, "NotFound", "No such Direct Line stream.")
        conversation_id = match["conversation_id"]
        query = parse_qs(parts.query)
        try:
            claims = jwt.decode(
                (query.get("t") or [""])[-1], self._key, algorithms=["HS256"], issuer=_ISSUER,
                audience=_STREAM_AUDIENCE, options={"require": ["exp", "conv", "end"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            raise EmulatorError(403, "Forbidden", "Invalid stream credential.") from None
        if claims["conv"] != conversation_id or self._clock() >= claims["exp"]:
            raise EmulatorError(403, "Forbidden", "The stream URL has expired; reconnect for a new one.")
        watermark = (query.get("watermark") or [REPLAY_ALL])[-1]
        after = -1 if watermark == REPLAY_ALL else _parse_watermark({"watermark": [watermark]})
        self._require_conversation(conversation_id)
        return StreamGrant(conversation_id, after, lifetime=max(0.0, claims["end"] - self._clock()))

    def activities_after(self, conversation_id: str, after: int) -> list[JsonObject]:
        """The conversation's activities after sequence number `after`; EmulatorError 404 when the
        conversation is gone."""
        with self._lock:
            return [a for a in self._find(conversation_id).activities if _sequence(a) > after]

    def watch(self, conversation_id: str, watcher: StreamWatcher) -> Callable[[], None]:
        """Wake `watcher` on every new activity of the conversation, until the returned function is
        called. Direct Line keeps one stream per conversation: the streams before are told to close."""
        with self._lock:
            conversation = self._find(conversation_id)
            before, conversation.watchers = conversation.watchers, [watcher]
        for earlier in before:
            earlier.collide()

        def unwatch() -> None:
            with self._lock:
                if watcher in conversation.watchers:
                    conversation.watchers.remove(watcher)

        return unwatch

    def _stream_url(self, request: _Request, conversation_id: str, after: int) -> str:
        now = int(self._clock())
        claims = {
            "iss": _ISSUER, "aud": _STREAM_AUDIENCE, "conv": conversation_id,
            "exp": now + STREAM_CONNECT_SECONDS,  # to connect
            "end": now + self._token_ttl,  # when the stream closes
        }
        credential = jwt.encode(claims, self._key, algorithm="HS256")
        watermark = REPLAY_ALL if after < 0 else str(after)
        return (
            f"{request.stream_base}/conversations/{quote(conversation_id, safe='')}/stream"
            f"?watermark={watermark}&t={credential}"
        )

    # ---- state -------------------------------------------------------------------------------

    def _create_conversation(
        self, user_id: str | None, user_name: str | None, trusted_origins: tuple[str, ...]
    ) -> _Conversation:
        conversation = _Conversation(
            conversation_id=secrets.token_urlsafe(18),
            # Direct Line binds an id of its own when the caller names none.
            user_id=user_id or f"dl_{secrets.token_hex(16)}",
            user_name=user_name,
            trusted_origins=trusted_origins,
            activities=deque(maxlen=self._max_activities),
        )
        with self._lock:
            while len(self._conversations) >= self._max_conversations:
                self._conversations.popitem(last=False)
            self._conversations[conversation.conversation_id] = conversation
            if self._welcome:
                self._append(conversation, {"type": "message", "text": WELCOME_TEXT, "from": BOT_ACCOUNT})
        return conversation

    def _append(self, conversation: _Conversation, activity: JsonObject) -> JsonObject:
        """Store an activity with server-assigned fields; the caller holds the lock."""
        sequence = conversation.next_sequence
        conversation.next_sequence += 1
        stored = {
            **activity,
            "id": f"{conversation.conversation_id}|{sequence:07d}",
            "timestamp": _iso_timestamp(self._clock()),
            "channelId": "directline",
            "conversation": {"id": conversation.conversation_id},
            "serviceUrl": "",
        }
        conversation.activities.append(stored)
        return stored

    def _require_conversation(self, conversation_id: str) -> _Conversation:
        with self._lock:
            return self._find(conversation_id)

    def _find(self, conversation_id: str) -> _Conversation:
        """The conversation or a 404; the caller holds the lock."""
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise EmulatorError(404, "NotFound", "Conversation not found (ended or evicted).")
        return conversation

    # ---- credentials -------------------------------------------------------------------------

    def _is_secret(self, credential: str) -> bool:
        given = credential.encode("utf-8")
        # Every key compared, so that the time taken says nothing about which one matched.
        matches = [hmac.compare_digest(given, key) for key in self._secrets]
        return any(matches)

    def _require_secret(self, authorization: str | None) -> None:
        if not self._is_secret(_bearer(authorization)):
            raise EmulatorError(403, "Forbidden", "Unknown or invalid Direct Line secret.")

    def _authorize(self, authorization: str | None, conversation_id: str) -> _Claims:
        """Claims for a conversation route: the secret may use any conversation, a token its own."""
        credential = _bearer(authorization)
        if self._is_secret(credential):
            conversation = self._require_conversation(conversation_id)
            return _Claims(conversation_id, conversation.user_id, conversation.user_name)
        claims = self._verify_token(credential)
        if not hmac.compare_digest(claims.conversation_id, conversation_id):
            raise EmulatorError(403, "Forbidden", "The token is not valid for this conversation.")
        return claims

    def _issue_token(self, claims: _Claims) -> str:
        now = int(self._clock())
        payload: JsonObject = {
            "iss": _ISSUER,
            "conv": claims.conversation_id,
            "user": claims.user_id,
            "iat": now,
            "exp": now + self._token_ttl,
            # Two tokens minted in the same second must still differ, as Direct Line's do.
            "jti": secrets.token_urlsafe(9),
        }
        if claims.user_name:
            payload["name"] = claims.user_name
        return jwt.encode(payload, self._key, algorithm="HS256")

    def _verify_token(self, token: str) -> _Claims:
        try:
            # Expiry is checked below against the injected clock, not PyJWT's wall clock.
            payload = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=_ISSUER,
                options={
                    "require": ["exp", "iat", "conv", "user"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise EmulatorError(403, "Forbidden", "Invalid token.") from None
        conversation_id, user_id = payload.get("conv"), payload.get("user")
        exp, name = payload.get("exp"), payload.get("name")
        if not isinstance(conversation_id, str) or not isinstance(user_id, str):
            raise EmulatorError(403, "Forbidden", "Invalid token.")
        if not isinstance(exp, int | float) or self._clock() >= exp:
            raise EmulatorError(403, "TokenExpired", "Token expired.")
        return _Claims(conversation_id, user_id, name if isinstance(name, str) else None)

    def _conversation_answer(self, claims: _Claims) -> JsonObject:
        return {
            "conversationId": claims.conversation_id,
            "token": self._issue_token(claims),
            "expires_in": self._token_ttl,
        }


# ---- request parsing (pure) --------------------------------------------------------------------


def _read_request(
    method: str, params: dict[str, str], environ: WSGIEnvironment, public_endpoint: str | None
) -> _Request:
    authorization = environ.get("HTTP_AUTHORIZATION")
    return _Request(
        params=params,
        query=parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True),
        authorization=authorization if isinstance(authorization, str) else None,
        body=_read_body(environ) if method == "POST" else b"",
        stream_base=_stream_base(environ, public_endpoint),
    )


def _stream_base(environ: WSGIEnvironment, public_endpoint: str | None) -> str:
    """ws(s)://host/v3/directline where the client reaches the stream: the public endpoint when
    one is set, else the host and scheme the request came in with."""
    if public_endpoint is not None:
        scheme, _, rest = public_endpoint.partition("://")
        return ("wss" if scheme == "https" else "ws") + "://" + rest.rstrip("/")
    server = f"{environ.get('SERVER_NAME', '127.0.0.1')}:{environ.get('SERVER_PORT', '80')}"
    host = environ.get("HTTP_HOST") or server
    scheme = "wss" if environ.get("wsgi.url_scheme") == "https" else "ws"
    return f"{scheme}://{host}{PATH_PREFIX}"


def _read_body(environ: WSGIEnvironment) -> bytes:
    try:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise EmulatorError(400, "BadArgument", "Invalid Content-Length.") from None
    if declared > MAX_BODY_BYTES:
        raise EmulatorError(413, "PayloadTooLarge", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    if declared <= 0:
        return b""
    body: bytes = environ["wsgi.input"].read(declared)
    return body


def _bearer(authorization: str | None) -> str:
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise EmulatorError(403, "Forbidden", "An Authorization: Bearer credential is required.")
    return credential.strip()


def _json_object(body: bytes, *, allow_empty: bool) -> JsonObject:
    if not body.strip() and allow_empty:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EmulatorError(400, "BadArgument", "The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise EmulatorError(400, "BadArgument", "The body must be a JSON object.")
    return value


def _clean_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise EmulatorError(400, "BadArgument", f"{what} must be a string of 1 to {limit} characters.")
    if _CONTROL_CHARS.search(value):
        raise EmulatorError(400, "BadArgument", f"{what} must not contain control characters.")
    return value


def _parse_user(value: object) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise EmulatorError(400, "BadArgument", "'user' must be an object.")
    user_id = value.get("id")
    name = value.get("name")
    return (
        None if user_id is None else _clean_text(user_id, "user.id", 256),
        None if name is None else _clean_text(name, "user.name", 256),
    )


def _parse_origins(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 50:
        raise EmulatorError(400, "BadArgument", "'trustedOrigins' must be a list of strings.")
    return tuple(_clean_text(origin, "trustedOrigins[]", 2048) for origin in value)


def _parse_watermark(query: dict[str, list[str]]) -> int:
    """The watermark as a sequence number; -1 (everything) when absent or empty."""
    raw = (query.get("watermark") or [""])[-1].strip()
    if not raw:
        return -1
    if not raw.isdigit() or len(raw) > 12:
        raise EmulatorError(400, "BadArgument", "Invalid watermark.")
    return int(raw)


def _sequence(activity: JsonObject) -> int:
    return int(str(activity["id"]).rpartition("|")[2])


def _echo_reply(activity: JsonObject) -> JsonObject:
    text = activity.get("text")
    said = text if isinstance(text, str) and text else "(nothing)"
    return {
        "type": "message",
        "from": BOT_ACCOUNT,
        "recipient": activity["from"],
        "text": f"You said: {said}",
        "replyToId": activity["id"],
        "inputHint": "acceptingInput",
    }


def _iso_timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- responses ---------------------------------------------------------------------------------


def _error_response(error: EmulatorError) -> _Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return _Response(error.status, body, error.headers)


def _preflight(environ: WSGIEnvironment) -> _Response:
    requested = str(environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")).strip()
    # Echo what the browser asks for when it is a plain header list: Web Chat's set grows.
    allowed = requested if requested and _HEADER_LIST.match(requested) else _ALLOWED_HEADERS
    return _Response(
        204,
        None,
        [
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", allowed),
            ("Access-Control-Max-Age", "600"),
        ],
    )


def _send(response: _Response, start_response: StartResponse) -> list[bytes]:
    payload = b"" if response.body is None else json.dumps(response.body).encode("utf-8")
    if response.text is not None:
        payload = response.text.encode("utf-8")
    headers = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Expose-Headers", "Retry-After"),
        ("Cache-Control", "no-store"),
        *response.headers,
    ]
    if response.body is not None:
        headers.append(("Content-Type", "application/json; charset=utf-8"))
    headers.append(("Content-Length", str(len(payload))))
    start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
    return [payload]


# ---- running it on a loopback port -------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's own log is the service's audit trail


@dataclass
class RunningEmulator:
    """An emulator served by the standard library's WSGI server on a thread of its own."""

    emulator: DirectLineEmulator
    server: WSGIServer
    thread: threading.Thread

    @property
    def endpoint(self) -> str:
        """The Direct Line base URL, ending in /v3/directline: what DIRECT_LINE_ENDPOINT is set to."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{PATH_PREFIX}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_emulator(
    emulator: DirectLineEmulator, *, host: str = "127.0.0.1", port: int = 0
) -> RunningEmulator:
    """Serve `emulator` on a loopback port (0 picks a free one) until `stop()`."""
    server = make_server(host, port, emulator, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="emulator", daemon=True)
    thread.start()
    return RunningEmulator(emulator, server, thread)
