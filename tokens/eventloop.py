"""waitress's event loop, watching only what may have changed (Linux).

waitress decides what each socket waits for by asking its dispatcher `readable()` and `writable()`,
and its loop (wasyncore.poll2) asks every dispatcher on every turn, registering each socket anew with
a fresh poll(): with 64 busy connections that was an eighth of the server's CPU, and with a thousand
idle ones far more. This loop keeps one epoll set and asks again only where the answer may have
changed:

- a socket that had an event on the last turn (its dispatcher ran), and a new one (the loop's socket
  map notes every socket added: `SocketMap`);
- a connection a worker thread touched: waitress's threads change a connection's state only while
  serving it, and then wake the loop through the server's trigger; the trigger here notes, first,
  which connection the waking thread was serving (`Watcher.serving`);
- a connection the loop's own policy changed (`touch`, e.g. an overdue request marked for closing);
- the listening sockets and the trigger, on every turn (their `readable()` keeps waitress's
  connection limit and idle timeouts);
- every socket, every `SWEEP_SECONDS`: whatever else changes a connection's state (waitress's idle
  timeout) is then seen within that time.

The events themselves are handled by waitress's own `readwrite`, as poll2 would.
"""

from __future__ import annotations

import collections
import contextlib
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from waitress import wasyncore

# For the type checker: epoll is Linux's (tokens/server.py imports this module there only).
assert sys.platform == "linux"  # noqa: S101  # nosec B101

SWEEP_SECONDS = 0.25


class SocketMap(dict[int, Any]):
    """waitress's socket map (descriptor -> dispatcher) for this loop: it notes every socket added
    and removed, so that a new connection is looked at on the next turn, even one that took over
    the descriptor of a connection closed since."""

    def __init__(self) -> None:
        super().__init__()
        self.added: collections.deque[int] = collections.deque()
        self.removed: collections.deque[int] = collections.deque()

    def __setitem__(self, fd: int, dispatcher: Any) -> None:
        super().__setitem__(fd, dispatcher)
        self.added.append(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.removed.append(fd)


class Watcher:
    """One per serving process, on waitress's event-loop thread (except `serving` and the trigger
    hook, which worker threads use). Give waitress `map`."""

    def __init__(self, sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.map = SocketMap()
        self._sweep_seconds = sweep_seconds
        self._always: list[Any] = []  # the listeners and their triggers: looked at on every turn
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[Any, int]] = {}  # fd -> (dispatcher, events registered)
        self._again: set[int] = set()  # fds to look at on the next turn
        self._touched: collections.deque[Any] = collections.deque()  # from any thread
        self._serving = threading.local()
        self._next_sweep = 0.0

    @contextlib.contextmanager
    def serving(self, channel: Any) -> Iterator[None]:
        """Around a worker thread's service of `channel`: a wake-up of the loop from within it is
        about that channel."""
        self._serving.channel = channel
        try:
            yield
        finally:
            self._serving.channel = None

    def waking(self, pull: Callable[[], None]) -> Callable[[], None]:
        """The server's pull_trigger, noting first which connection the waking thread serves."""

        def pull_trigger() -> None:
            channel = getattr(self._serving, "channel", None)
            if channel is not None:
                self._touched.append(channel)
            pull()

        return pull_trigger

    def always(self, *dispatchers: Any) -> None:
        """Look at these on every turn."""
        self._always.extend(dispatchers)

    def touch(self, channel: Any) -> None:
        """Look at this connection on the next turn: the loop's own thread changed it."""
        self._touched.append(channel)

    def turn(self, timeout: float) -> None:
        socket_map = self.map
        while socket_map.removed:
            fd = socket_map.removed.popleft()
            if fd in self._watched and fd not in socket_map:  # closed: the kernel dropped it already
                self._forget(fd)
        looking = self._again
        while socket_map.added:
            looking.add(socket_map.added.popleft())
        while self._touched:
            fd = self._touched.popleft()._fileno
            if fd is not None:  # None once closed
                looking.add(fd)
        looking.update(dispatcher._fileno for dispatcher in self._always)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_seconds
            looking.update(socket_map)
        self._again = set()
        for fd in looking:
            dispatcher = socket_map.get(fd)
            if dispatcher is not None:
                self._watch(fd, dispatcher)
        for fd, events in self._epoll.poll(timeout):
            self._again.add(fd)
            dispatcher = socket_map.get(fd)
            if dispatcher is not None:
                wasyncore.readwrite(dispatcher, events)

    def close(self) -> None:
        self._epoll.close()

    def _watch(self, fd: int, dispatcher: Any) -> None:
        wanted = 0
        if dispatcher.readable():
            wanted |= select.EPOLLIN | select.EPOLLPRI
        if dispatcher.writable() and not dispatcher.accepting:
            wanted |= select.EPOLLOUT
        known = self._watched.get(fd)
        if known is not None and known[0] is not dispatcher:  # the fd was closed and reused
            self._forget(fd)
            known = None
        registered = 0 if known is None else known[1]
        if wanted == registered:
            if known is None:
                self._watched[fd] = (dispatcher, 0)
            return
        try:
            if not registered:
                self._epoll.register(fd, wanted)
            elif not wanted:
                self._epoll.unregister(fd)
            else:
                self._epoll.modify(fd, wanted)
        except OSError:
            # Closed meanwhile by a worker thread (waitress closes a connection whose write fails
            # there), its number perhaps taken already by another socket: forget it and look
            # again on the next turn, when the map says whose the number is.
            self._watched.pop(fd, None)
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
            self._again.add(fd)
            return
        self._watched[fd] = (dispatcher, wanted)

    def _forget(self, fd: int) -> None:
        _, registered = self._watched.pop(fd)
        if registered:
            with contextlib.suppress(OSError):  # closed: no longer in the set
                self._epoll.unregister(fd)
