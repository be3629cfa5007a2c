"""A circuit breaker for Direct Line, per process.

While Direct Line is down, every caller would otherwise wait out UPSTREAM_TIMEOUT, the server's
threads would fill with waiting calls, and it would stop answering anything. After `threshold`
failures in a row (5xx, refused or reset connections, timeouts) the breaker opens: calls are answered
`503 upstream_unavailable` at once, with Retry-After, for `open_seconds`. Then one call is let through
as a probe: if it succeeds the breaker closes, if it fails the breaker opens again for twice as long
(at most `max_open_seconds`), so a long outage costs one probe a minute and recovery is noticed within
that minute. Answers that show Direct Line is up (a token, a refused secret, throttling) close it.

    closed --threshold failures--> open --open_seconds--> half-open (one probe)
       ^                                                     |  success: closed
       +-----------------------------------------------------+  failure: open, twice as long
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from tokens.errors import UpstreamUnavailable

log = logging.getLogger("tokens.breaker")


class Call:
    """What one guarded call found: `up` once Direct Line has answered (whatever it answered)."""

    __slots__ = ("up",)

    def __init__(self) -> None:
        self.up = False


class Breaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        open_seconds: float = 10.0,
        max_open_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._first_open = open_seconds
        self._max_open = max_open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_for = open_seconds
        self._open_until: float | None = None  # set while open or half-open
        self._probing = False

    @property
    def available(self) -> bool:
        """False while the breaker is open or probing: what /api/health reports."""
        return self._open_until is None

    @contextlib.contextmanager
    def guarded(self) -> Iterator[Call]:
        """One call to Direct Line: refused at once while open (UpstreamUnavailable); afterwards a
        success when the caller set `up`, else a failure, whatever ended the call (an exception of
        any kind included), so that a probe is never left taken."""
        self.before_call()
        call = Call()
        try:
            yield call
        finally:
            if call.up:
                self.succeeded()
            else:
                self.failed()

    def before_call(self) -> None:
        """UpstreamUnavailable at once while open, except for the one probe after the pause."""
        with self._lock:
            if self._open_until is None:
                return
            left = self._open_until - self._clock()
            if left <= 0 and not self._probing:
                self._probing = True
                log.info("Direct Line circuit half-open: one probe call goes through")
                return
        raise UpstreamUnavailable(
            "Direct Line is failing; not calling it for a moment. Try again shortly.",
            retry_after=max(1, math.ceil(left)),
        )

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            if self._open_until is not None:
                log.warning("Direct Line circuit closed: Direct Line answers again")
            self._open_until = None
            self._probing = False
            self._open_for = self._first_open

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing:
                self._probing = False
                self._open_for = min(self._open_for * 2, self._max_open)
                self._open(f"the probe failed; next probe in {self._open_for:g} s")
            elif self._open_until is None and self._failures >= self._threshold:
                self._open(f"{self._failures} failures in a row; answering 503 for {self._open_for:g} s")

    def _open(self, why: str) -> None:
        self._open_until = self._clock() + self._open_for
        log.error("Direct Line circuit open: %s", why)
