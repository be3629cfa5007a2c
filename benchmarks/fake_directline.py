"""A fake Direct Line for the benchmarks: HTTPS on loopback, answering after a fixed delay.

It runs in a process of its own (`python -m benchmarks.fake_directline`), like the real service
runs on a machine of its own, so that its work never competes with the measured client for a GIL.
Each connection has a thread; TCP_NODELAY is set on every accepted socket; the TLS handshake runs in
the connection's thread, so a slow handshake never holds up other connections.

`POST …/tokens/generate` and `…/tokens/refresh` with the right bearer answer 200 with a token after
`--delay-ms`; anything else answers 401 or 404 at once.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.certs import CertFiles
from benchmarks.served import stop_process

ROOT = Path(__file__).resolve().parent.parent
READY_PREFIX = "FAKE_DIRECT_LINE_PORT "
START_TIMEOUT = 20.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, context: ssl.SSLContext, secret: str, delay: float) -> None:
        self.context = context
        self.secret = secret
        self.delay = delay
        self.counter = itertools.count(1)
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = self.socket.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wrapped = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-handshake is normal under load; say nothing."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        conn = self.request
        assert isinstance(conn, ssl.SSLSocket)
        conn.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if not self.path.endswith(("/tokens/generate", "/tokens/refresh")):
            self._send(404, {"error": {"code": "NotFound"}})
            return
        if self.path.endswith("/tokens/generate") and (
            self.headers.get("Authorization") != f"Bearer {self.server.secret}"
        ):
            self._send(403, {"error": {"code": "BadArgument"}})
            return
        time.sleep(self.server.delay)
        n = next(self.server.counter)
        self._send(
            200,
            {"conversationId": f"conv-{n}", "token": f"dl-token-{n}-{'x' * 600}", "expires_in": 1800},
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(cert: Path, key: Path, secret: str, delay: float) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = _Server(context, secret, delay)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"{READY_PREFIX}{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()


@contextlib.contextmanager
def running_fake(certs: CertFiles, secret: str, delay_ms: float) -> Iterator[str]:
    """The fake as a child process; yields its Direct Line base URL."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.fake_directline",
        "--cert",
        str(certs.cert),
        "--key",
        str(certs.key),
        "--delay-ms",
        str(delay_ms),
    ]
    env = {**os.environ, "FAKE_DIRECT_LINE_SECRET": secret}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        yield f"https://127.0.0.1:{_read_port(process)}/v3/directline"
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
    raise RuntimeError("the fake Direct Line did not start")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_directline", description=__doc__)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    secret = os.environ.get("FAKE_DIRECT_LINE_SECRET", "")
    if not secret:
        parser.error("set FAKE_DIRECT_LINE_SECRET")
    serve(args.cert, args.key, secret, args.delay_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
