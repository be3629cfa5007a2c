"""The benchmarks' fake Direct Line: `POST /v3/directline/tokens/generate` answered after a fixed
delay, over HTTPS, by one asyncio event loop in a process of its own.

    FAKE_DIRECT_LINE_SECRET=... python -m benchmarks.fake_directline --tls-dir DIR --delay-ms 20

Why it is built this way: in production Direct Line is another machine, but here it shares two CPUs
with the server under test and the load generator, so it must never set the pace, and every
CPU-millisecond it spends is taken from the server being measured. Four fakes were measured on this
kind of machine (20 ms delay, wrk over HTTPS with kept-alive connections, CPU from /proc; the table
is in docs/benchmarks.md). Straight at the fake, at c=64 and c=128:

- the tests' `FakeDirectLine` (a thread per connection that sleeps through the delay): 86 % of the
  c / delay ceiling at c=64 but 56 % at c=128, 0.20-0.26 ms of CPU per request;
- a Node `https` server with a timer per request: 80-92 %, 0.06-0.09 ms;
- this asyncio loop: 79-90 %, 0.05-0.06 ms;
- a hand-written `selectors` loop on non-blocking `SSLSocket`s: 88-89 %, 0.04 ms.

Behind the Node peer at c=64 (how the benchmark uses it, on a busy machine) the four cost 0.27-0.33,
0.14, 0.12-0.15 and 0.08-0.11 ms per request. The hand-written loop is cheapest, by about 0.03 ms a
request (3-6 % of one CPU at the rates reached), but it is its own event loop: timers, handshakes and
partial TLS writes done by hand. This one is kept: nearly as cheap, standard-library asyncio doing the
hard parts, in the project's own language. Its CPU per request is measured and reported in every run.

What makes it cheap and never the bottleneck: a timer per request instead of a sleeping thread,
kept-alive TLS connections (a handshake per connection, not per request), a listen backlog of 4096
(the kernel caps it at net.core.somaxconn), TCP_NODELAY (no Nagle wait before the small answers), and
answers built as bytes.

It speaks just enough HTTP/1.1 for the benchmarks' clients (requests/urllib3, Node's fetch, wrk,
http.client): bodies with a Content-Length (no chunked ones), connections kept alive unless the
client says `Connection: close`, one request at a time per connection (so answers stay in order even
if a client pipelines). Like Direct Line and like the tests' fake, `tokens/generate` needs
`Authorization: Bearer <secret>` (403 otherwise) and answers `conversationId`, `token`, `expires_in`
and a field of its own to pass through; any other path is 404. The tests' scriptable fake is
`tests.fakes.FakeDirectLine`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.certs import CertFiles
from tests.served import ROOT, stop_process

GENERATE_PATH = b"/v3/directline/tokens/generate"
READY_PREFIX = "FAKE_DIRECT_LINE_PORT "
SECRET_VARIABLE = "FAKE_DIRECT_LINE_SECRET"
BACKLOG = 4096
TOKEN_PADDING = 600  # a real Direct Line token is a JWT of several hundred characters
TOKEN_TTL = 1800
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
START_TIMEOUT = 20.0

_NOT_FOUND = b'{"error":{"code":"NotFound"}}'
_FORBIDDEN = b'{"error":{"code":"BadArgument"}}'
_BAD_REQUEST = b'{"error":{"code":"BadArgument","message":"malformed request"}}'
_REASONS = {200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 413: b"Payload Too Large"}


class _Connection(asyncio.Protocol):
    """One client connection: parse a request, answer it `delay` seconds later, then the next."""

    def __init__(self, fake: _Fake) -> None:
        self._fake = fake
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._pending: asyncio.TimerHandle | None = None  # the answer being delayed, one at a time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio sets it too; said here because the benchmark relies on it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._pending is None:
            self._next_request()

    def _next_request(self) -> None:
        head, found, rest = self._buffer.partition(b"\r\n\r\n")
        if not found:
            if len(self._buffer) > MAX_HEAD:
                self._reply(400, _BAD_REQUEST, close=True)
            return
        try:
            method, target, version, headers = _parse_head(head)
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            self._reply(400, _BAD_REQUEST, close=True)
            return
        if length > MAX_BODY:
            self._reply(413, _BAD_REQUEST, close=True)
            return
        if length < 0 or b"transfer-encoding" in headers:  # chunked bodies: no benchmark client sends one
            self._reply(400, _BAD_REQUEST, close=True)
            return
        if len(rest) < length:
            return  # the rest of the body is still on its way
        self._buffer = rest[length:]
        close = headers.get(b"connection", b"").lower() == b"close" or version == b"HTTP/1.0"
        status, body = self._fake.answer(method, target, headers.get(b"authorization", b""))
        self._pending = asyncio.get_running_loop().call_later(
            self._fake.delay, self._reply, status, body, close
        )

    def _reply(self, status: int, body: bytes, close: bool) -> None:
        self._pending = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, _REASONS[status], len(body), b"Connection: close\r\n" if close else b"", body)
        )
        if close:
            transport.close()
        elif self._buffer:
            self._next_request()


def _parse_head(head: bytes) -> tuple[bytes, bytes, bytes, dict[bytes, bytes]]:
    """(method, target, version, headers by lower-case name); ValueError when malformed."""
    request_line, *lines = head.split(b"\r\n")
    method, target, version = request_line.split(b" ")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError("a header line without a colon")
        headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


class _Fake:
    def __init__(self, secret: str, delay: float) -> None:
        self.delay = delay
        self._authorization = b"Bearer " + secret.encode()
        self._counter = itertools.count(1)
        self._padding = "x" * TOKEN_PADDING

    def answer(self, method: bytes, target: bytes, authorization: bytes) -> tuple[int, bytes]:
        if method != b"POST" or target != GENERATE_PATH:
            return 404, _NOT_FOUND
        if not hmac.compare_digest(authorization, self._authorization):
            return 403, _FORBIDDEN
        n = next(self._counter)
        token = {
            "conversationId": f"conv-{n}",
            "token": f"dl-token-{n}-{self._padding}",
            "expires_in": TOKEN_TTL,
            "extraField": "passed through",
        }
        return 200, json.dumps(token).encode()


async def serve(certs: CertFiles, secret: str, delay: float) -> None:
    """Listen on a free loopback port, print it, and serve until SIGTERM or SIGINT."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs.cert, certs.key)
    fake = _Fake(secret, delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(fake), "127.0.0.1", 0, ssl=tls, backlog=BACKLOG, reuse_address=True
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    print(f"{READY_PREFIX}{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stopped.wait()


# -- as the benchmarks start it -------------------------------------------------------------------


@dataclass(frozen=True)
class RunningFake:
    endpoint: str  # the Direct Line base URL: https://127.0.0.1:<port>/v3/directline
    pid: int  # for its CPU time

    @property
    def generate_url(self) -> str:
        return f"{self.endpoint}/tokens/generate"


@contextlib.contextmanager
def started_fake(certs: CertFiles, secret: str, delay_ms: float) -> Iterator[RunningFake]:
    """The fake as a child process, answering after `delay_ms`; stopped afterwards."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.fake_directline",
        "--tls-dir",
        str(certs.cert.parent),
        "--delay-ms",
        str(delay_ms),
    ]
    env = {**os.environ, SECRET_VARIABLE: secret}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        port = _read_port(process)
        yield RunningFake(f"https://127.0.0.1:{port}/v3/directline", process.pid)
    finally:
        stop_process(process)


def _read_port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith(READY_PREFIX):
            return int(line[len(READY_PREFIX) :])
    raise RuntimeError(f"the fake Direct Line did not start (exit status {process.poll()})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fake_directline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tls-dir", required=True, help="where tests.certs.make_certificate wrote its files")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_VARIABLE, "")
    if not secret:
        parser.error(f"set {SECRET_VARIABLE}")
    asyncio.run(serve(CertFiles.in_directory(Path(args.tls_dir)), secret, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
