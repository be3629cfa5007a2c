"""The fake Direct Line of the tests and the benchmarks: real HTTP (or HTTPS) on loopback, scriptable
for fault injection, and the small parts other fakes share: a loopback HTTP server and a clock a test
moves by hand.

Each test queues what the next calls should meet (a status, a hang, a reset, a huge body...); with
nothing queued the fake answers like Direct Line does, after `delay` seconds: `tokens/generate` needs
one of the site's keys, `tokens/refresh` any bearer. Every request it receives is recorded (unless
told not to).

The variants users meet, as attributes a test sets, each modelled on Direct Line's public record:
- `keys`: the site's secret keys (every site has two, for swapping). A key not in it is `403`.
- `enhanced_auth`: *Enhanced authentication options* on: a reconnect made with a key is `400
  {"error": {"code": "MissingProperty", "message": "Missing user ID"}}` (the reconnect page of the
  Direct Line 3.0 docs; MicrosoftDocs/bot-docs #412 and #679; BotFramework-DirectLineJS #191).
- `region_not_allowed`: a regional bot (Europe) asked through another region's host: every call is
  `403 {"error": {"code": "RegionNotAllowed", "message": "The request received in unitedkingdom but
  target regional bot belongs to europe. ..."}}` (CopilotStudioSamples #328, BotFramework-DirectLineJS
  #434; the Base URI section of the Direct Line 3.0 API reference).
- `token_ttl`: the tokens' `expires_in`: 1800 in Direct Line's documented examples, 3600 for
  Copilot Studio agents.

The benchmarks use a cheaper fake of their own, in a process of its own
(benchmarks/fake_directline.py).
"""

from __future__ import annotations

import functools
import itertools
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.certs import CertFiles

SECRET = "fake-directline-secret-7Qm2xZ9vRb"
# Direct Line's own words, as its users reported them (see the module docstring).
MISSING_USER_ID_BODY = b'{"error":{"code":"MissingProperty","message":"Missing user ID"}}'
REGION_NOT_ALLOWED_BODY = (
    b'{"error":{"code":"RegionNotAllowed","message":"The request received in unitedkingdom but target '
    b'regional bot belongs to europe. Please check BaseURI https://docs.microsoft.com/azure/bot-service/'
    b'rest-api/bot-framework-rest-direct-line-3-0-api-reference#base-uri."}}'
)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Behaviour:
    kind: str  # "ok", "status", "hang", "trickle", "reset", "raw"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    connections = 0
    tls: ssl.SSLContext | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on a hang or a huge body is the point of those tests

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        self.connections += 1
        # Without it, Nagle's algorithm and delayed ACKs add ~40 ms to replies on kept-alive
        # connections.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # The handshake runs in the connection's own thread (QuietHandler.setup), so that a
            # slow one never holds up the others.
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address


class LoopbackServer:
    """Serves `handler` on a free 127.0.0.1 port (over TLS with `tls`), on a thread of its own,
    until `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: CertFiles | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), handler)
        if tls is not None:
            self._server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._server.tls.load_cert_chain(tls.cert, tls.key)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        """How many TCP connections clients opened."""
        return self._server.connections

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeDirectLine:
    def __init__(
        self,
        secret: str = SECRET,
        *,
        tls: CertFiles | None = None,
        delay: float = 0.0,
        record: bool = True,
        token_padding: int = 40,
    ) -> None:
        self.requests: list[Recorded] = []
        self.secret = secret
        self.keys: set[str] = {secret}
        self.enhanced_auth = False
        self.region_not_allowed = False
        self.token_ttl = 1800
        self.delay = delay  # seconds before every answer
        self._record = record
        self._token_padding = token_padding
        self._script: deque[Behaviour] = deque()
        # Consulted when nothing is queued: a behaviour for this request, or None to answer normally.
        # Lets a test fault a known share of a concurrent load (see `fail_where`).
        self.rule: Callable[[Recorded], Behaviour | None] | None = None
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.conversations: set[str] = set()  # the ones tokens/generate opened
        self._stop = threading.Event()
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

        self._http = LoopbackServer(Handler, tls)
        self.port = self._http.port
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}/v3/directline"

    # -- scripting ----------------------------------------------------------------------------

    def then(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def then_status(self, status: int, body: bytes = b'{"error":{"code":"X"}}', **headers: str) -> None:
        self.then(Behaviour("status", status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def then_hang(self, seconds: float) -> None:
        self.then(Behaviour("hang", seconds=seconds))

    def then_trickle(self, seconds_per_byte: float) -> None:
        """Answer 200 with a token body sent one byte at a time."""
        self.then(Behaviour("trickle", seconds=seconds_per_byte))

    def then_reset(self) -> None:
        self.then(Behaviour("reset"))

    def then_body(self, body: bytes, status: int = 200) -> None:
        self.then(Behaviour("raw", status, body=body))

    def fail_where(self, rule: Callable[[Recorded], Behaviour | None]) -> None:
        """Answer each unscripted request as `rule` says (None: normally); called from many threads."""
        self.rule = rule

    @property
    def connections(self) -> int:
        """How many TCP connections clients opened to the fake."""
        return self._http.connections

    def close(self) -> None:
        self._stop.set()
        self._http.close()

    # -- serving ------------------------------------------------------------------------------

    def _next(self, recorded: Recorded) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        rule = self.rule
        chosen = rule(recorded) if rule is not None else None
        return chosen or Behaviour("ok")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        recorded = Recorded(handler.path, dict(handler.headers.items()), body)
        if self._record:
            with self._lock:
                self.requests.append(recorded)
        behaviour = self._next(recorded)
        if self.delay:
            time.sleep(self.delay)
        if behaviour.kind == "hang":
            self._stop.wait(behaviour.seconds)
            handler.close_connection = True
            return
        if behaviour.kind == "trickle":
            self._trickle(handler, behaviour.seconds)
            return
        if behaviour.kind == "reset":
            self._reset(handler)
            return
        if behaviour.kind == "ok":
            self._answer(handler, recorded)
            return
        payload = behaviour.body
        self._send(handler, behaviour.status, behaviour.headers, payload)

    def _answer(self, handler: BaseHTTPRequestHandler, recorded: Recorded) -> None:
        """As Direct Line: a token for a key (generate, a new conversation), for any bearer
        (refresh), or for a key and a conversation it opened (reconnect, with a streamUrl)."""
        scheme, _, credential = recorded.headers.get("Authorization", "").partition(" ")
        with_secret = scheme == "Bearer" and credential in self.keys
        path = recorded.path.removeprefix("/v3/directline/")
        if self.region_not_allowed:
            self._send(handler, 403, {}, REGION_NOT_ALLOWED_BODY)
        elif handler.command == "GET" and path.startswith("conversations/"):
            conversation = path.removeprefix("conversations/").partition("?")[0]
            if not with_secret:
                self._send(handler, 403, {}, b'{"error":{"code":"BadArgument"}}')
            elif self.enhanced_auth:
                self._send(handler, 400, {}, MISSING_USER_ID_BODY)
            elif conversation not in self.conversations:
                self._send(handler, 404, {}, b'{"error":{"code":"NotFound"}}')
            else:
                answer = {**self._token_answer(conversation), "streamUrl": f"wss://stream.example/{conversation}"}
                self._send(handler, 200, {}, json.dumps(answer).encode())
        elif handler.command != "POST" or path not in ("tokens/generate", "tokens/refresh"):
            self._send(handler, 404, {}, b'{"error":{"code":"NotFound"}}')
        elif path == "tokens/generate" and not with_secret:
            self._send(handler, 403, {}, b'{"error":{"code":"BadArgument"}}')
        else:
            self._send(handler, 200, {}, json.dumps(self._token_answer()).encode())

    def _token_answer(self, conversation: str | None = None) -> dict[str, Any]:
        n = next(self._counter)
        if conversation is None:
            conversation = f"conv-{n}"
            with self._lock:
                self.conversations.add(conversation)
        return {
            "conversationId": conversation,
            "token": f"dl-token-{n}-{'x' * self._token_padding}",
            "expires_in": self.token_ttl,
            "extraField": "passed through",
        }

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _trickle(self, handler: BaseHTTPRequestHandler, seconds_per_byte: float) -> None:
        body = json.dumps(self._token_answer()).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        for byte in body:
            if self._stop.wait(seconds_per_byte):
                return
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return

    @staticmethod
    def _reset(handler: BaseHTTPRequestHandler) -> None:
        """Start an answer, then abort the connection with a TCP reset (SO_LINGER 0)."""
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"tok")
        handler.wfile.flush()
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.close_connection = True
        handler.connection.close()


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting to it is refused. Its port stays bound (never
    listening) for as long as the tests run, so that no other server started meanwhile, here or in
    another process, can take it and answer."""
    return f"http://127.0.0.1:{_refusing_port()}/v3/directline"


@functools.cache
def _refusing_port() -> int:
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no SO_REUSEADDR: nobody shares it
    held.bind(("127.0.0.1", 0))
    _held_sockets.append(held)
    port: int = held.getsockname()[1]
    return port


_held_sockets: list[socket.socket] = []


# -- a fake Azure AI Speech token service (issueToken) ---------------------------------------------


SPEECH_KEY = "fakeSpeechKey0123456789abcdef0123"


class FakeSpeech:
    """`POST /sts/v1.0/issueToken` as Azure AI Speech answers it: a JWT as text for the right
    `Ocp-Apim-Subscription-Key`, 401 otherwise. A test queues what the next calls meet, as with
    FakeDirectLine (`then_status`, `then_hang`, `then_body`); `delay` holds every answer."""

    def __init__(self, key: str = SPEECH_KEY, *, lifetime: int = 600) -> None:
        self.key = key
        self.lifetime = lifetime
        self.delay = 0.0
        self.requests: list[Recorded] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = itertools.count(1)
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                fake._handle(self)

        self._http = LoopbackServer(Handler)
        self.endpoint = f"http://127.0.0.1:{self._http.port}"

    def then_status(self, status: int, body: bytes = b'{"error":{"code":"401","message":"detail-of-speech"}}', **headers: str) -> None:
        with self._lock:
            self._script.append(Behaviour("status", status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def then_hang(self, seconds: float) -> None:
        with self._lock:
            self._script.append(Behaviour("hang", seconds=seconds))

    def then_body(self, body: bytes) -> None:
        with self._lock:
            self._script.append(Behaviour("raw", 200, body=body))

    def close(self) -> None:
        self._stop.set()
        self._http.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        with self._lock:
            self.requests.append(Recorded(handler.path, dict(handler.headers.items()), None))
            behaviour = self._script.popleft() if self._script else Behaviour("ok")
        if self.delay:
            time.sleep(self.delay)
        if behaviour.kind == "hang":
            self._stop.wait(behaviour.seconds)
            handler.close_connection = True
        elif behaviour.kind in ("status", "raw"):
            FakeDirectLine._send(handler, behaviour.status, behaviour.headers, behaviour.body)
        elif handler.path != "/sts/v1.0/issueToken":
            FakeDirectLine._send(handler, 404, {}, b'{"error":{"code":"404"}}')
        elif handler.headers.get("Ocp-Apim-Subscription-Key") != self.key:
            FakeDirectLine._send(handler, 401, {}, b'{"error":{"code":"401","message":"detail-of-speech"}}')
        else:
            FakeDirectLine._send(handler, 200, {}, self._token().encode())

    def _token(self) -> str:
        import base64

        def part(document: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

        now = int(time.time())
        claims = {"region": "westeurope", "serial": next(self._counter), "iat": now, "exp": now + self.lifetime}
        return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmVk"
