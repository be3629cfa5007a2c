"""The demo's one port, in front of serve: WebSocket upgrades for the emulator's stream are served
here, and every other connection is relayed, byte for byte, to serve's own listener on a private
loopback port.

Why: Web Chat's default transport is Direct Line's WebSocket stream, and a WSGI server (waitress)
cannot hand a connection over to a WebSocket. The stream could have had a port of its own, but the
demo is often opened through one forwarded port (a dev container, Codespaces, `--public-url`), so
the page, the service, the emulator's browser routes and the stream all share the port the page
came from. Only the demo runs this; the deployed service never does.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable

HEAD_LIMIT = 64 * 1024  # a request head larger than this is relayed as it is (waitress refuses it)
HEAD_SECONDS = 10.0  # as serve's own --request-timeout: a head that takes longer is dropped
RELAY_BYTES = 65536
_STREAM_REQUEST = re.compile(rb"GET /v3/directline/conversations/[A-Za-z0-9_-]{1,128}/stream[?\s]")
_UPGRADE_WEBSOCKET = re.compile(rb"(?im)^upgrade:[ \t]*websocket[ \t]*\r?$")

StreamHandler = Callable[[socket.socket, bytes], None]


class Front:
    """Accepts on `listeners`; a stream upgrade goes to `on_stream(connection, head)`, anything
    else to `backend` (host, port)."""

    def __init__(
        self, listeners: list[socket.socket], backend: tuple[str, int], on_stream: StreamHandler
    ) -> None:
        self._listeners = listeners
        self._backend = backend
        self._on_stream = on_stream
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for listener in self._listeners:
            thread = threading.Thread(target=self._accept, args=(listener,), name="demo-front", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        for thread in self._threads:
            thread.join(2)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # stopped
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._handle, args=(connection,), name="demo-link", daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        try:
            head = read_head(connection)
        except OSError:
            connection.close()
            return
        if not head:
            connection.close()
        elif is_stream_upgrade(head):
            self._on_stream(connection, head)
        else:
            self._relay(connection, head)

    def _relay(self, client: socket.socket, head: bytes) -> None:
        try:
            backend = socket.create_connection(self._backend, timeout=5)
        except OSError:
            client.close()
            return
        backend.settimeout(None)
        backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            backend.sendall(head)
            pump(client, backend)
        except OSError:
            pass
        finally:
            client.close()
            backend.close()


def read_head(connection: socket.socket) -> bytes:
    """The bytes up to the end of the first request's head (maybe a little of its body), read within
    HEAD_SECONDS; fewer when the client stops sending or the head exceeds HEAD_LIMIT."""
    deadline = time.monotonic() + HEAD_SECONDS
    head = b""
    while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request head took too long")
        connection.settimeout(left)
        chunk = connection.recv(RELAY_BYTES)
        if not chunk:
            break
        head += chunk
    connection.settimeout(None)
    return head


def is_stream_upgrade(head: bytes) -> bool:
    """A WebSocket upgrade of an emulator stream URL (`GET /v3/directline/conversations/{id}/stream`)."""
    request_line, _, headers = head.partition(b"\r\n")
    return _STREAM_REQUEST.match(request_line) is not None and _UPGRADE_WEBSOCKET.search(headers) is not None


def pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both sides have finished sending (a half-close is passed on)."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        sending = 2
        while sending:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                target: socket.socket = key.data
                data = source.recv(RELAY_BYTES)
                if data:
                    target.sendall(data)
                    continue
                selector.unregister(source)
                sending -= 1
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
