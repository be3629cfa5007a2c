"""`python -m tokens serve` under connection abuse, over real TCP on loopback: a client from another
address still gets its tokens while attackers hold every connection they may, idle, or trickle large
headers. Attackers use the source addresses 127.0.0.2 and up (all of 127/8 is loopback on Linux);
each scenario runs for a bounded time and closes everything it opened."""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import base_env, served
from tests.fakes import FakeDirectLine

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="source addresses beyond 127.0.0.1 are Linux's")

TOKEN_PATH = "/api/directline/token"
TOKEN_REQUEST = (
    b"POST /api/directline/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)
PER_ADDRESS = 100  # serve's default per-address share
MAX_CONNECTIONS = 1000  # serve's default: ten addresses' whole shares fill it
PROBES = 40
ANSWERED_WITHIN = 2.0  # seconds
SHARE_ANSWERED = 0.95


@pytest.fixture(autouse=True)
def enough_open_files() -> Iterator[None]:
    """This process opens over a thousand sockets; the usual soft limit is 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed it: an end of stream (or a reset) waiting to be read."""
    sock.settimeout(0)
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def probe(port: int, source: str, count: int) -> list[float]:
    """`count` token requests from `source`, each on a new connection as a new visitor's would be:
    seconds until each token came back (inf when none did within 10 s)."""
    waited = []
    for _ in range(count):
        started = time.monotonic()
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
        try:
            client.request("POST", TOKEN_PATH, body=b"{}", headers={"Content-Type": "application/json"})
            answer = client.getresponse()
            ok = answer.status == 200 and "token" in json.loads(answer.read())
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            client.close()
        waited.append(time.monotonic() - started if ok else float("inf"))
        time.sleep(0.05)
    return waited


def assert_probes_answered(waited: list[float]) -> None:
    fast = sum(seconds <= ANSWERED_WITHIN for seconds in waited)
    slowest = sorted(waited)[int(len(waited) * SHARE_ANSWERED) - 1]
    assert fast >= SHARE_ANSWERED * len(waited), (
        f"{fast} of {len(waited)} tokens within {ANSWERED_WITHIN} s; the 95th percentile waited {slowest:.2f} s"
    )


class Attacker:
    """Holds up to `per_address` connections from each of `sources`, reopening every one the server
    closes as fast as it can (a refresh costs it one connect), on a thread of its own."""

    def __init__(self, port: int, sources: list[str], per_address: int) -> None:
        self.port = port
        self.held: dict[str, list[socket.socket]] = {source: [] for source in sources}
        self.per_address = per_address
        self.reopened = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, first_bytes: bytes) -> None:
        """Open every connection, send each `first_bytes`, and read whatever answer comes."""
        for source, socks in self.held.items():
            while len(socks) < self.per_address:
                socks.append(self._opened(source, first_bytes))

    def _opened(self, source: str, first_bytes: bytes) -> socket.socket:
        sock = connect_from(source, self.port)
        if first_bytes:
            sock.sendall(first_bytes)
        return sock

    def run(self, step: bytes, every: float, first_bytes: bytes = b"") -> None:
        """Until stopped: send `step` on every connection each `every` seconds, and reopen (with
        `first_bytes`) those the server closed."""

        def loop() -> None:
            while not self._stop.wait(every):
                for source, socks in self.held.items():
                    for index, sock in enumerate(socks):
                        if closed_by_server(sock):
                            sock.close()
                            with contextlib.suppress(OSError):
                                socks[index] = self._opened(source, first_bytes)
                                self.reopened += 1
                            continue
                        if step:
                            with contextlib.suppress(OSError):
                                sock.send(step)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for socks in self.held.values():
            for sock in socks:
                sock.close()


@contextlib.contextmanager
def attacking(port: int, sources: list[str]) -> Iterator[Attacker]:
    attacker = Attacker(port, sources, PER_ADDRESS)
    try:
        yield attacker
    finally:
        attacker.close()


def read_answers(attacker: Attacker) -> None:
    """Wait for the answer to each connection's first request, so that it is idle, kept alive."""
    for socks in attacker.held.values():
        for sock in socks:
            sock.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk


def test_a_new_visitor_gets_tokens_while_ten_addresses_hold_every_connection_idle(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    """Ten addresses each hold their whole share of kept-alive connections, idle after one request,
    and reopen at once every one the server closes: the 1,000 places are full, yet a visitor from an
    eleventh address gets its tokens, because a waiting client is given the longest-idle place."""
    sources = [f"127.0.0.{n}" for n in range(2, 12)]
    with served(base_env(fake.base_url), tmp_path) as app, attacking(app.port, sources) as attacker:
        attacker.open(TOKEN_REQUEST)
        read_answers(attacker)
        attacker.run(b"", every=0.01, first_bytes=TOKEN_REQUEST)
        waited = probe(app.port, "127.0.0.12", PROBES)
        assert attacker.reopened > 0, "the server never needed the attackers' places"
    assert_probes_answered(waited)
    assert "closing idle or unfinished ones to make room" in app.log_text()


HEADER_START = b"POST /api/directline/token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Large: "


@pytest.mark.parametrize("header_kib", [30, 200])
def test_a_new_visitor_gets_tokens_while_four_hundred_connections_trickle_large_headers(
    fake: FakeDirectLine, tmp_path: Path, header_kib: int
) -> None:
    """Four addresses each hold their whole share of connections, each sending a large header at
    once and then one byte more at a time, never ending it; the attacker reopens every connection the
    server refuses (at 32 KiB, or when its request is overdue). Parsing costs the server time in
    proportion to the bytes, not to the header's length for every byte, so a visitor from a fifth
    address still gets its tokens."""
    sources = [f"127.0.0.{n}" for n in range(2, 6)]
    large = HEADER_START + b"x" * (header_kib * 1024)
    with served(base_env(fake.base_url), tmp_path) as app, attacking(app.port, sources) as attacker:
        attacker.open(large)
        attacker.run(b"x", every=0.005, first_bytes=large)
        time.sleep(2)
        waited = probe(app.port, "127.0.0.6", PROBES)
    assert_probes_answered(waited)


def test_a_header_over_32_kib_is_refused_in_the_json_error_shape(fake: FakeDirectLine, tmp_path: Path) -> None:
    with served(base_env(fake.base_url), tmp_path) as app, connect_from("127.0.0.1", app.port) as sock:
        sock.sendall(HEADER_START + b"x" * (32 * 1024 - len(HEADER_START)))  # no byte beyond, to be reset
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400"  # waitress stops parsing, so it answers as HTTP/1.0
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == "The request's headers are larger than 32768 bytes."


def test_when_every_place_is_taken_the_idle_connection_goes_before_an_arriving_request(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    """With room for four connections: an arriving request (half its headers sent) outlasts the
    idle connections when new clients need their places."""
    args = ["--max-connections", "6"]  # the listening socket and waitress's wake-up pipe take two
    with served(base_env(fake.base_url), tmp_path, args=args) as app:
        port = app.port
        arriving = connect_from("127.0.0.2", port)
        arriving.sendall(HEADER_START)
        idle = [connect_from("127.0.0.3", port) for _ in range(3)]
        time.sleep(0.3)
        newcomers = [connect_from("127.0.0.4", port) for _ in range(2)]
        time.sleep(0.5)
        try:
            assert [closed_by_server(sock) for sock in idle] == [True, True, False]
            assert not closed_by_server(arriving)
        finally:
            for sock in [arriving, *idle, *newcomers]:
                sock.close()
