"""Per-caller and global rate limits on the `limits` library, shared through Redis when configured.

Counting lives in `RATE_LIMIT_STORAGE`. With Redis every instance sees the same counts; with
`memory://` each process counts alone, so N instances allow N times the limit. When Redis cannot be
reached the limiter counts in this process instead (limits still hold, per instance), logs an error
at most once a minute, and tries Redis again after a few seconds: an outage of the counter store must
neither take the endpoint down nor lift every limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from tokens.errors import RateLimited

log = logging.getLogger("tokens.ratelimit")

GLOBAL_KEY = "all-callers"
REDIS_TIMEOUT = 0.5  # seconds; a slow counter store must not eat the request's time budget


class RateLimiter:
    def __init__(
        self,
        per_caller: Sequence[RateLimitItem],
        global_limits: Sequence[RateLimitItem],
        storage_url: str = "memory://",
        *,
        clock: Callable[[], float] = time.time,
        retry_shared_after: float = 5.0,
        error_log_interval: float = 60.0,
    ) -> None:
        self._per_caller = tuple(per_caller)
        self._global = tuple(global_limits)
        self._clock = clock
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if storage_url != "memory://":
            self._shared = MovingWindowRateLimiter(_shared_storage(storage_url))
        self._retry_shared_after = retry_shared_after
        self._error_log_interval = error_log_interval
        self._shared_down_until = 0.0
        self._last_error_log = -math.inf
        self._lock = threading.Lock()

    def check(self, caller_key: str) -> None:
        """Count one request for this caller and for everyone; raise RateLimited when over a limit."""
        shared = self._shared if self._clock() >= self._shared_down_until else None
        if shared is not None:
            try:
                self._check_with(shared, caller_key)
                return
            except StorageError as exc:
                self._shared_failed(exc)
        self._check_with(self._local, caller_key)

    def _check_with(self, limiter: MovingWindowRateLimiter, caller_key: str) -> None:
        # The caller's own limit first, so one noisy caller's refused requests do not use up the
        # global allowance of everyone else.
        for item in self._per_caller:
            if not limiter.hit(item, "caller", caller_key):
                raise RateLimited(retry_after=self._retry_after(limiter, item, "caller", caller_key))
        for item in self._global:
            if not limiter.hit(item, "global", GLOBAL_KEY):
                raise RateLimited(retry_after=self._retry_after(limiter, item, "global", GLOBAL_KEY))

    def _retry_after(self, limiter: MovingWindowRateLimiter, item: RateLimitItem, *ids: str) -> int:
        reset_time = limiter.get_window_stats(item, *ids).reset_time
        return max(1, math.ceil(reset_time - self._clock()))

    def _shared_failed(self, exc: StorageError) -> None:
        with self._lock:
            now = self._clock()
            self._shared_down_until = now + self._retry_shared_after
            if now - self._last_error_log >= self._error_log_interval:
                self._last_error_log = now
                log.error(
                    "Rate-limit storage unreachable (%s); counting per process until it is back",
                    type(exc.storage_error).__name__,
                )


def _shared_storage(url: str) -> Storage:
    storage = storage_from_string(
        url,
        wrap_exceptions=True,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
    )
    if not isinstance(storage, Storage):  # the asyncio storages live elsewhere; this cannot happen
        raise TypeError("rate-limit storage must be synchronous")
    return storage
