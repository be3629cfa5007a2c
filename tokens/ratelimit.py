"""Per-caller and global rate limits on the `limits` library, shared through Redis when configured.

Counting lives in `RATE_LIMIT_STORAGE`. With Redis every instance sees the same counts; with
`memory://` each process counts alone, so N instances allow N times the limit. When Redis cannot be
reached the limiter counts in this process instead (limits still hold, per instance), logs an error
at most once a minute, tries Redis again after a few seconds, and logs once when it is back: an
outage of the counter store must neither take the endpoint down nor lift every limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from tokens.errors import RateLimited

log = logging.getLogger("tokens.ratelimit")

GLOBAL_KEY = "all-callers"
REDIS_TIMEOUT = 0.5  # seconds; a slow counter store must not eat the request's time budget


class LocalMovingWindow:
    """A moving window counted in this process, with the two methods of `limits`' strategies that
    the limiter uses. `limits`' MemoryStorage starts a timer thread on most hits when traffic is
    light, which costs milliseconds per request; this one needs no thread. Keys whose hits have all
    left their window are dropped once a minute, so memory stays bounded by the active callers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:  # limits' clock too
        self._hits: dict[str, tuple[float, deque[float]]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._next_sweep = 0.0

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        key, window, now = item.key_for(*identifiers), item.get_expiry(), self._clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            hits = self._hits.setdefault(key, (window, deque()))[1]
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= item.amount:
                return False
            hits.append(now)
            return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = self._clock()
        with self._lock:
            _, hits = self._hits.get(item.key_for(*identifiers), (0.0, deque()))
            live = [stamp for stamp in hits if stamp > now - item.get_expiry()]
            oldest = live[0] if live else now
            return WindowStats(oldest + item.get_expiry(), max(0, item.amount - len(live)))

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + 60
        for key, (window, hits) in list(self._hits.items()):
            if not hits or hits[-1] <= now - window:
                del self._hits[key]


Counter = MovingWindowRateLimiter | LocalMovingWindow


class RateLimiter:
    def __init__(
        self,
        per_caller: Sequence[RateLimitItem],
        global_limits: Sequence[RateLimitItem],
        storage_url: str = "memory://",
        *,
        namespace: str = "tokens",
        clock: Callable[[], float] = time.monotonic,
        retry_shared_after: float = 5.0,
        error_log_interval: float = 60.0,
    ) -> None:
        self._per_caller = tuple(per_caller)
        self._global = tuple(global_limits)
        # Times the fallback: when to try the shared store again, when the error may be logged again.
        self._clock = clock
        self._local = LocalMovingWindow()
        self._redis: RedisStorage | None = None
        self._shared: MovingWindowRateLimiter | None = None
        if storage_url != "memory://":
            self._redis = _redis_storage(storage_url, namespace)
            self._shared = MovingWindowRateLimiter(self._redis)
        self._retry_shared_after = retry_shared_after
        self._error_log_interval = error_log_interval
        self._shared_down_until = -math.inf
        self._shared_failing = False
        self._last_error_log = -math.inf
        self._lock = threading.Lock()

    def check(self, *caller_keys: str, pool: str = "token") -> None:
        """Count one request for this caller and for everyone; raise RateLimited when over a limit."""
        shared = self._shared if self._clock() >= self._shared_down_until else None
        if shared is not None:
            try:
                self._check_with(shared, caller_keys, pool)
            except StorageError as exc:
                self._shared_failed(exc)
            else:
                if self._shared_failing:
                    self._shared_back()
                return
        self._check_with(self._local, caller_keys, pool)

    def close(self) -> None:
        """Close the pooled connections to the shared store; a later check simply reconnects."""
        if self._redis is not None:
            self._redis.storage.close()

    def _check_with(self, limiter: Counter, caller_keys: Sequence[str], pool: str) -> None:
        # The caller's own limits first, so one noisy caller's refused requests do not use up the
        # global allowance of everyone else. A caller known by several keys (an address and a user
        # id) must be within the limit on each of them.
        for caller_key in caller_keys:
            for item in self._per_caller:
                if not limiter.hit(item, "caller", caller_key):
                    raise RateLimited(retry_after=self._retry_after(limiter, item, "caller", caller_key))
        for item in self._global:
            # Each pool (minting, refreshing) has its own global allowance, so that refreshes, which
            # anyone with any bearer string can send, cannot use up the allowance for new tokens.
            if not limiter.hit(item, "global", GLOBAL_KEY, pool):
                raise RateLimited(retry_after=self._retry_after(limiter, item, "global", GLOBAL_KEY, pool))

    @staticmethod
    def _retry_after(limiter: Counter, item: RateLimitItem, *ids: str) -> int:
        """Whole seconds until the oldest hit in the window ages out and one request fits again."""
        reset_time = limiter.get_window_stats(item, *ids).reset_time
        # `limits` stamps its entries with time.time() (in Redis too), so the wall clock, not the
        # injectable one, is what the reset time is measured against.
        return max(1, math.ceil(reset_time - time.time()))

    def _shared_failed(self, exc: StorageError) -> None:
        with self._lock:
            self._shared_failing = True
            now = self._clock()
            self._shared_down_until = now + self._retry_shared_after
            if now - self._last_error_log >= self._error_log_interval:
                self._last_error_log = now
                log.error(
                    "Rate-limit storage unreachable (%s); counting per process until it is back",
                    type(exc.storage_error).__name__,
                )

    def _shared_back(self) -> None:
        # Said once per outage, so the log shows when shared counting resumed, not only when it stopped.
        with self._lock:
            if self._shared_failing:
                self._shared_failing = False
                log.info("Rate-limit storage reachable again; counting is shared across instances")


def _redis_storage(url: str, namespace: str) -> RedisStorage:
    """The shared store. Settings accept only redis:// and rediss://, so Redis is the one kind."""
    return RedisStorage(
        url,
        # Redis errors arrive as limits' StorageError, the one exception the fallback has to know.
        wrap_exceptions=True,
        # Two services (two bots) sharing one cache must not share their counts.
        key_prefix=f"LIMITS:{namespace}",
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
    )
