"""What keeps slow or greedy clients from starving the hosted server: its connection policy.

waitress reads every request on one event-loop thread before a worker thread sees it, so a slow
client holds a connection, not a thread. Connections are what an attacker can try to use up, and
this module is how `serve` keeps them:

- one client network may hold `per_address` of them: an IPv4 address, or an IPv6 network of the rate
  limits' prefix (RATE_LIMIT_IPV6_PREFIX), since one host can send from any address of its /64;
- a request's headers and body must all arrive within `request_timeout` of its first byte (the
  channel in tokens/server.py keeps that clock);
- when every place is taken and a new client is waiting to connect, the place of a connection that
  is doing nothing is given to it: the one idle longest, else the request that began arriving
  longest ago, else the oldest connection whose answer its client is not reading (`make_room`).
  Holding connections then buys an attacker nothing, however fast they reconnect or however slowly
  they read: a waiting client always goes first. Only a request in service keeps its place;
- headers are scanned once (`LinearHeaderParser`), so a client trickling a large header costs time
  in proportion to what it sends, not to its square, and they may be at most MAX_REQUEST_HEADER long.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser

from tokens.clientip import rate_limit_network
from tokens.notices import Notice

log = logging.getLogger("tokens.server")

# The request line and headers together, as the Kestrel server in front of an Azure Functions app
# allows by default (MaxRequestHeadersTotalSize, 32 KiB): a page that works here works there. waitress's
# own default is 256 KiB.
MAX_REQUEST_HEADER = 32 * 1024
HEADER_END = b"\r\n\r\n"  # the only end of a header block waitress accepts
OVERDUE_SWEEP_SECONDS = 0.25  # how often requests are checked against their deadline


class Guard(NamedTuple):
    """The connection policy of one serving process."""

    request_timeout: float = 10.0  # seconds for a request's headers and body, from its first byte
    max_connections: int = 1000  # open connections per process
    per_address: int | None = 100  # open connections per client network; None behind a proxy
    ipv6_prefix: int = 64  # an IPv6 client's network, as the rate limits count it


class AddressCount:
    """Open connections per client network, shared by the event loop and the worker threads."""

    def __init__(self, guard: Guard) -> None:
        self._limit = guard.per_address
        self._prefix = guard.ipv6_prefix
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def counting(self) -> bool:
        return self._limit is not None

    def network(self, address: str) -> str:
        return rate_limit_network(address, self._prefix)

    def add(self, network: str) -> bool:
        """Count one more connection from `network`; False when that is more than it may hold."""
        with self._lock:
            held = self._open.get(network, 0) + 1
            self._open[network] = held
        return self._limit is None or held <= self._limit

    def remove(self, network: str) -> None:
        with self._lock:
            left = self._open.pop(network, 1) - 1
            if left > 0:
                self._open[network] = left


class LinearHeaderParser(HTTPRequestParser):
    """waitress's request parser, but a header arriving in many pieces is collected here and handed
    to waitress once complete (or once too long): waitress joins and searches its whole header so
    far on every piece, which made 400 connections trickling 200 KB headers cost a whole CPU."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self._head = bytearray()

    def received(self, data: bytes) -> int:
        if self.completed or self.body_rcv is not None or not data:
            return int(super().received(data))
        searched = len(self._head)
        self._head += data
        # A header end may straddle two pieces: look from just before the new piece.
        ended = self._head.find(HEADER_END, max(0, searched - len(HEADER_END) + 1)) >= 0
        if not ended and len(self._head) < self.adj.max_request_header_size:
            self.header_bytes_received = len(self._head)
            return len(data)
        # waitress parses what came before this piece together with it, once, as it would have.
        self.header_plus = bytes(self._head[:searched])
        self.header_bytes_received = searched
        self._head = bytearray()
        return int(super().received(data))


_full = Notice(log, logging.WARNING)


def make_room(socket_map: Mapping[int, Any], limit: int, listeners: Iterable[socket.socket]) -> bool:
    """When the connections in waitress's `socket_map` fill the `limit` and a client waits on one of
    the `listeners`, close the connection that is doing least (see the module's docstring); True if
    one was closed. Runs on the event-loop thread, between turns."""
    if len(socket_map) < limit or not any(_waiting(sock) for sock in listeners):
        return False
    victim = min(
        (
            (rank, channel)
            for channel in list(socket_map.values())
            if isinstance(channel, HTTPChannel) and (rank := _idleness(channel)) is not None
        ),
        key=lambda ranked: ranked[0],
        default=None,
    )
    if victim is None:  # every connection has a request in service: the newcomer waits its turn
        return False
    _full.write(
        "All %d connections are open and clients are waiting: closing idle or unfinished ones to make "
        "room (--max-connections)",
        limit,
    )
    channel: Any = victim[1]  # requests_lock: not in the stubs
    with channel.requests_lock:
        if _idleness(channel) is None:  # a request completed meanwhile: leave it be
            return False
        channel.handle_close()
    return True


def close_overdue(socket_map: Mapping[int, Any], now: float) -> list[Any]:
    """Mark for closing every connection whose request has not all arrived by its deadline (kept
    by the channel as `request_due`), and return them; waitress closes them on its next look at
    them. Runs on the event-loop thread every OVERDUE_SWEEP_SECONDS: once per turn would cost every
    turn a look at every connection."""
    overdue = []
    for channel in list(socket_map.values()):
        due: float | None = getattr(channel, "request_due", None)  # only our channels have one
        if due is None or now <= due:
            continue
        # Not while the server itself is not reading it: a request in service, or an answer going
        # out, holds back the rest of a request that followed on the same connection.
        if not (channel.requests or channel.total_outbufs_len or channel.will_close):
            channel.will_close = True
            overdue.append(channel)
    return overdue


def _idleness(channel: Any) -> tuple[int, float] | None:
    """How little a channel is doing, as a sort key (smaller gives its place up first), or None when
    it must not be closed: a request of it is in service (its worker thread writes to it), or it
    is closing already."""
    if channel.requests:
        return None
    if channel.total_outbufs_len:
        # An answer still going out: gone in a moment to a client that reads, held for as long as
        # it likes by one that reads a byte at a time (each byte makes it look active to waitress's
        # idle timeout). After the idle and the arriving ones, the oldest of these goes first.
        return (2, float(channel.creation_time))
    if channel.will_close or channel.close_when_flushed:
        return None
    if channel.request is None:  # kept alive between requests, or nothing sent yet
        return (0, float(channel.last_activity))
    started: float = getattr(channel, "request_started", channel.last_activity)
    return (1, started)  # a request still arriving


def _waiting(sock: socket.socket) -> bool:
    """Whether a connection waits to be accepted on a listening socket (without accepting it)."""
    if sock.fileno() < 0:
        return False
    if sys.platform == "win32":  # no poll() there; select() has no descriptor ceiling there either
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    else:  # each platform its own branch, for the type checker
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
