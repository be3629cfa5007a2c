"""The hosted server's event loop (tokens/eventloop.py): it asks a connection what it waits for only
when that may have changed, and never misses such a change. Real sockets (socket pairs), dispatchers
as waitress's are; the sweep that would otherwise catch a miss is put off for an hour."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="epoll is Linux's")

NO_SWEEP = 3600.0


class Dispatcher:
    """What the loop needs of a waitress dispatcher: its socket, readable(), writable(), and the
    event handlers, recording what they were called for."""

    accepting = False

    def __init__(self, sock: socket.socket, socket_map: dict[int, Any]) -> None:
        self.socket = sock
        self._fileno: int | None = sock.fileno()
        self.want_read = True
        self.want_write = False
        self.asked = 0  # how many times the loop asked what it waits for
        self.events: list[str] = []
        self.map = socket_map
        socket_map[sock.fileno()] = self

    def readable(self) -> bool:
        self.asked += 1
        return self.want_read

    def writable(self) -> bool:
        return self.want_write

    def handle_read_event(self) -> None:
        self.events.append("read")
        self.socket.recv(1024)

    def handle_write_event(self) -> None:
        self.events.append("write")
        self.want_write = False

    def handle_expt_event(self) -> None:
        self.events.append("expt")

    def handle_close(self) -> None:
        self.close()

    def handle_error(self) -> None:
        self.events.append("error")

    def close(self) -> None:
        if self._fileno is not None:
            del self.map[self._fileno]
            self._fileno = None
        self.socket.close()


@pytest.fixture
def loop() -> Iterator[tuple[Any, dict[int, Any]]]:
    from tokens.eventloop import Watcher

    watcher = Watcher(sweep_seconds=NO_SWEEP)
    socket_map = watcher.map
    yield watcher, socket_map
    watcher.close()
    for dispatcher in list(socket_map.values()):
        dispatcher.close()


def pair(socket_map: dict[int, Any]) -> tuple[Dispatcher, socket.socket]:
    ours, theirs = socket.socketpair()
    return Dispatcher(ours, socket_map), theirs


def test_a_new_connection_is_watched_from_its_first_turn(loop: tuple[Any, dict[int, Any]]) -> None:
    watcher, socket_map = loop
    watcher.turn(0)  # the first turn sweeps everything; the next ones only what changed
    connection, peer = pair(socket_map)
    peer.send(b"x")
    watcher.turn(1)
    assert connection.events == ["read"]
    peer.close()


def test_an_idle_connection_is_not_asked_again_on_every_turn(loop: tuple[Any, dict[int, Any]]) -> None:
    watcher, socket_map = loop
    idle, idle_peer = pair(socket_map)
    busy, busy_peer = pair(socket_map)
    watcher.turn(0)
    asked = idle.asked
    for _ in range(10):
        busy_peer.send(b"x")
        watcher.turn(1)
    assert len(busy.events) == 10
    assert idle.asked == asked
    idle_peer.close()
    busy_peer.close()


def test_a_change_made_while_serving_a_connection_is_seen_when_the_thread_wakes_the_loop(
    loop: tuple[Any, dict[int, Any]],
) -> None:
    """A worker thread has an answer ready (the connection becomes writable) and pulls the trigger:
    the loop's next turn waits for the socket to be writable and writes, with no sweep to help."""
    watcher, socket_map = loop
    connection, peer = pair(socket_map)
    woken = threading.Event()
    pull_trigger = watcher.waking(woken.set)
    watcher.turn(0)

    def serve() -> None:
        with watcher.serving(connection):
            connection.want_write = True
            pull_trigger()

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join()
    assert woken.is_set()
    watcher.turn(1)  # looks at the connection again: now it waits to write, and can
    watcher.turn(1)
    assert "write" in connection.events
    peer.close()


def test_a_change_the_loop_itself_makes_is_seen_once_touched(loop: tuple[Any, dict[int, Any]]) -> None:
    watcher, socket_map = loop
    connection, peer = pair(socket_map)
    watcher.turn(0)
    connection.want_write = True
    watcher.touch(connection)
    watcher.turn(1)
    watcher.turn(1)
    assert "write" in connection.events
    peer.close()


def test_a_descriptor_closed_and_reused_by_a_new_connection_is_watched_afresh(
    loop: tuple[Any, dict[int, Any]],
) -> None:
    watcher, socket_map = loop
    old, old_peer = pair(socket_map)
    watcher.turn(0)
    number = old.socket.fileno()
    old.close()
    old_peer.close()
    new, new_peer = pair(socket_map)
    if new.socket.fileno() != number:  # the kernel hands out the lowest free number: usually this one
        pytest.skip("the descriptor was not reused")
    new_peer.send(b"x")
    watcher.turn(1)
    assert new.events == ["read"]
    new_peer.close()


def test_a_connection_closed_by_a_worker_thread_while_the_loop_looks_at_it_does_not_stop_the_loop(
    loop: tuple[Any, dict[int, Any]],
) -> None:
    """waitress closes a connection on a worker thread when a write there fails; if that lands
    between the loop finding the connection and registering it with epoll, epoll refuses the
    closed descriptor. The loop carries on, and the other connections are served."""
    watcher, socket_map = loop
    watcher.turn(0)
    closing, closing_peer = pair(socket_map)

    def readable_then_closed() -> bool:
        closing.socket.close()  # as the worker thread would, just after the loop's lookup
        return True

    closing.readable = readable_then_closed  # type: ignore[method-assign]
    other, other_peer = pair(socket_map)
    other_peer.send(b"x")
    watcher.turn(1)
    watcher.turn(1)
    assert other.events == ["read"]
    closing_peer.close()
    other_peer.close()
