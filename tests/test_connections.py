"""The hosted server's connection policy (tokens/connections.py), part by part; tests/test_serve_starvation.py
shows it at work against attackers over real connections."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser

from tokens.connections import (
    MAX_REQUEST_HEADER,
    AddressCount,
    Guard,
    LinearHeaderParser,
    close_overdue,
    make_room,
)

REQUEST = (
    b"POST /api/directline/token?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\n"
    b"X-Forwarded-For: 203.0.113.9\r\nContent-Length: 18\r\n\r\n{\"userName\":\"Ann\"}"
)


def parsed(parser: HTTPRequestParser, pieces: list[bytes]) -> HTTPRequestParser:
    for piece in pieces:
        rest = piece
        while rest and not parser.completed:
            rest = rest[parser.received(rest) :]
    return parser


def in_pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def adjustments() -> Adjustments:
    return Adjustments(max_request_header_size=MAX_REQUEST_HEADER)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, len(REQUEST)])
def test_a_request_arriving_in_pieces_parses_as_waitress_parses_it_whole(size: int) -> None:
    whole: Any = parsed(HTTPRequestParser(adjustments()), [REQUEST])  # path, query: untyped in the stubs
    linear: Any = parsed(LinearHeaderParser(adjustments()), in_pieces(REQUEST, size))
    assert linear.completed and linear.error is None
    assert (linear.command, linear.path, linear.query, linear.headers) == (
        whole.command, whole.path, whole.query, whole.headers,
    )
    assert linear.get_body_stream().read() == b'{"userName":"Ann"}'


def test_the_end_of_the_header_split_between_two_pieces_is_found() -> None:
    end = REQUEST.index(b"\r\n\r\n") + 2
    linear = parsed(LinearHeaderParser(adjustments()), [REQUEST[:end], REQUEST[end:]])
    assert linear.completed and linear.headers["CONTENT_LENGTH"] == "18"


def test_bytes_after_the_first_request_are_left_for_the_next_one() -> None:
    parser = LinearHeaderParser(adjustments())
    rest = REQUEST + REQUEST
    while not parser.completed:
        rest = rest[parser.received(rest) :]
    assert rest == REQUEST


def test_a_header_that_reaches_the_limit_without_ending_is_refused_as_too_large() -> None:
    never_ends = b"GET / HTTP/1.1\r\nX-Large: " + b"x" * MAX_REQUEST_HEADER
    linear = parsed(LinearHeaderParser(adjustments()), in_pieces(never_ends, 1000))
    assert linear.completed and linear.error is not None and linear.error.code == 431


def test_connections_are_counted_per_ipv4_address() -> None:
    count = AddressCount(Guard(per_address=2))
    assert [count.add(count.network("192.0.2.1")) for _ in range(3)] == [True, True, False]
    assert count.add(count.network("192.0.2.2"))


def test_ipv6_connections_are_counted_per_network_of_the_rate_limit_prefix() -> None:
    count = AddressCount(Guard(per_address=2, ipv6_prefix=64))
    same_host = ["2001:db8:1:2::1", "2001:db8:1:2::abcd", "2001:db8:1:2:ffff::9"]
    assert [count.add(count.network(address)) for address in same_host] == [True, True, False]
    assert count.add(count.network("2001:db8:1:3::1"))  # the next /64: another customer


def test_a_wider_ipv6_prefix_counts_a_whole_site_as_one() -> None:
    count = AddressCount(Guard(per_address=1, ipv6_prefix=48))
    assert count.add(count.network("2001:db8:1:2::1"))
    assert not count.add(count.network("2001:db8:1:ffff::1"))


def test_a_closed_connection_gives_its_place_back() -> None:
    count = AddressCount(Guard(per_address=1))
    network = count.network("192.0.2.1")
    assert count.add(network)
    count.remove(network)
    assert count.add(network)


def test_behind_a_proxy_nothing_is_capped() -> None:
    count = AddressCount(Guard(per_address=None))
    assert all(count.add(count.network("192.0.2.1")) for _ in range(1000))


# -- which connection gives its place up: real waitress channels on socket pairs ----------------------


class Full:
    """A server process whose every place is taken, with a client waiting on its listener."""

    def __init__(self) -> None:
        self.map: dict[int, Any] = {}
        self.server: Any = SimpleNamespace(active_channels={})  # all a channel asks of its server
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.waiting = socket.create_connection(self.listener.getsockname())  # never accepted
        self.peers: list[socket.socket] = []

    def channel(self, **state: Any) -> Any:
        ours, theirs = socket.socketpair()
        self.peers.append(theirs)
        channel = HTTPChannel(self.server, ours, ("192.0.2.1", 1), adjustments(), self.map)
        for name, value in state.items():
            setattr(channel, name, value)
        return channel

    def make_room(self) -> bool:
        return make_room(self.map, len(self.map), [self.listener])

    def close(self) -> None:
        for channel in list(self.map.values()):
            channel.close()
        for sock in [self.listener, self.waiting, *self.peers]:
            sock.close()


@pytest.fixture
def full() -> Iterator[Full]:
    server = Full()
    yield server
    server.close()


def test_the_connection_idle_longest_gives_its_place_up_first(full: Full) -> None:
    now = time.time()
    recent = full.channel(last_activity=now - 1)
    longest = full.channel(last_activity=now - 50)
    arriving = full.channel(request=object(), request_started=now - 100)
    assert full.make_room()
    assert not longest.connected
    assert recent.connected and arriving.connected


def test_a_request_in_service_keeps_its_place(full: Full) -> None:
    serving = full.channel(requests=[object()], last_activity=0.0)
    assert not full.make_room()
    assert serving.connected


def test_an_answer_its_client_will_not_read_gives_its_place_up_after_idle_and_arriving_ones(
    full: Full,
) -> None:
    """A client that reads its answer a byte at a time keeps waitress's idle clock fresh forever:
    without this, such connections could hold every place."""
    now = time.time()
    unread = full.channel(total_outbufs_len=23_000, creation_time=now - 500, last_activity=now)
    arriving = full.channel(request=object(), request_started=now - 1)
    assert full.make_room()
    assert not arriving.connected and unread.connected
    assert full.make_room()
    assert not unread.connected


def test_a_request_the_server_has_not_been_reading_is_not_overdue(full: Full) -> None:
    """The start of a second request came with the first; waitress reads no more of it while it
    answers the first, so its deadline does not run out meanwhile."""
    answering = full.channel(request=object(), request_due=time.time() - 1, total_outbufs_len=500)
    late = full.channel(request=object(), request_due=time.time() - 1)
    full.map[-1] = SimpleNamespace()  # the listener and waitress's trigger are in the map too
    assert close_overdue(full.map, time.time()) == [late]
    del full.map[-1]
    assert not answering.will_close
