"""The emulator's WebSocket stream: one conversation's activities pushed to one socket, as Direct
Line's stream does (see the notes in demo/emulator.py).

`serve_stream(sock, head, emulator)` takes a connection whose HTTP upgrade request (`head`) was read
already, answers the handshake with wsproto, and then, until either side closes:

- sends each batch of new activities as one ActivitySet `{"activities": [...], "watermark": "N"}`;
- sends an empty message every `keepalive` seconds, as Direct Line does to keep the connection alive;
- ignores the client's messages (Web Chat sends empty ones), answers pings, and closes on close;
- closes with the reason `collision` when another stream of the same conversation opens, and when
  its lifetime (the grant's) is over.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from demo.emulator import DirectLineEmulator, EmulatorError, StreamGrant

KEEPALIVE_SECONDS = 15.0
NORMAL_CLOSURE = 1000
RECEIVE_BYTES = 65536


class _Watcher:
    """Wakes the stream's thread (through a socket pair it selects on) when the emulator has news."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self.collided = threading.Event()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # the stream is closing; nothing to wake
            self._writer.send(b"\0")

    def collide(self) -> None:
        self.collided.set()
        self.wake()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


def serve_stream(
    sock: socket.socket, head: bytes, emulator: DirectLineEmulator, *, keepalive: float = KEEPALIVE_SECONDS
) -> None:
    """Serve one stream on `sock` (whose upgrade request `head` was read already), then close it."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(head)
        request = next((event for event in ws.events() if isinstance(event, Request)), None)
        if request is None:
            return
        try:
            grant = emulator.grant_stream(request.target)
        except EmulatorError as error:
            _reject(sock, ws, error)
            return
        sock.sendall(ws.send(AcceptConnection()))
        _Stream(sock, ws, emulator, grant, keepalive=keepalive).run()
    except (OSError, LocalProtocolError, RemoteProtocolError):
        pass  # the client went away or spoke nonsense: the stream simply ends
    finally:
        sock.close()


def _reject(sock: socket.socket, ws: WSConnection, error: EmulatorError) -> None:
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    sock.sendall(ws.send(RejectConnection(status_code=error.status, headers=headers, has_body=True)))
    sock.sendall(ws.send(RejectData(data=body)))


class _Stream:
    def __init__(
        self,
        sock: socket.socket,
        ws: WSConnection,
        emulator: DirectLineEmulator,
        grant: StreamGrant,
        *,
        keepalive: float,
    ) -> None:
        self._sock, self._ws, self._emulator = sock, ws, emulator
        self._conversation_id = grant.conversation_id
        self._after = grant.after  # the sequence number of the last activity sent
        self._keepalive = keepalive
        self._ends = time.monotonic() + grant.lifetime

    def run(self) -> None:
        watcher = _Watcher()
        unwatch = self._emulator.watch(self._conversation_id, watcher)
        try:
            self._loop(watcher)
        finally:
            unwatch()
            watcher.close()

    def _loop(self, watcher: _Watcher) -> None:
        if not self._send_news():  # what came before the socket opened
            return
        next_keepalive = time.monotonic() + self._keepalive
        while True:
            wait = max(0.0, min(next_keepalive, self._ends) - time.monotonic())
            ready, _, _ = select.select([self._sock, watcher.reader], [], [], wait)
            if time.monotonic() >= self._ends:
                self._close("The stream's time is over; reconnect for a new stream URL.")
                return
            if watcher.reader in ready:
                watcher.drain()
                if watcher.collided.is_set():
                    self._close("collision")
                    return
                if not self._send_news():
                    return
            if self._sock in ready and not self._receive():
                return
            if time.monotonic() >= next_keepalive:
                if not self._send_news():  # the conversation may have gone meanwhile
                    return
                self._send_text("")
                next_keepalive = time.monotonic() + self._keepalive

    def _send_news(self) -> bool:
        """Send what is new as one ActivitySet; False when the conversation is gone (closed)."""
        try:
            activities = self._emulator.activities_after(self._conversation_id, self._after)
        except EmulatorError:
            self._close("The conversation has ended.")
            return False
        if activities:
            self._after = int(str(activities[-1]["id"]).rpartition("|")[2])
            self._send_text(json.dumps({"activities": activities, "watermark": str(self._after)}))
        return True

    def _receive(self) -> bool:
        """Take what the client sent; False once the connection is closing or closed."""
        data = self._sock.recv(RECEIVE_BYTES)
        if not data:
            return False
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, Ping):
                self._sock.sendall(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._sock.sendall(self._ws.send(event.response()))
                return False
            # Text or binary messages are ignored, as Direct Line ignores them.
        return True

    def _send_text(self, text: str) -> None:
        self._sock.sendall(self._ws.send(TextMessage(data=text)))

    def _close(self, reason: str) -> None:
        with contextlib.suppress(OSError, LocalProtocolError):
            self._sock.sendall(self._ws.send(CloseConnection(code=NORMAL_CLOSURE, reason=reason)))
