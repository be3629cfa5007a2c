"""Per-caller and global rate limits: sliding-window counters, in this process or shared in Redis.

Limits are written in the `limits` library's notation (`10/minute`, `10 per minute;100/hour`) and
parsed here, so that the default `memory://` storage never imports `limits` (it costs a cold start
about 25 ms). Redis counts through `limits` itself, with the same sliding-window-counter strategy.

A sliding-window counter keeps two numbers per key and limit: the requests of the current window and
of the one before, weighted by how much of it still overlaps the last `window` seconds. Memory is
constant per key, and a key exists only for callers that were counted.

Order matters (see `RateLimiter.check`): everything is looked at before anything is counted, so a
caller refused by the global limit is neither charged nor remembered, and a caller refused by its
own limit does not use up everyone else's global allowance.

When Redis cannot be reached the limiter counts in this process instead (limits still hold, per
instance), logs an error at most once a minute, tries Redis again after a few seconds, and logs once
when it is back: an outage of the counter store must neither take the endpoint down nor lift every
limit.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from tokens.errors import RateLimited

if TYPE_CHECKING:
    from limits.storage import RedisStorage

log = logging.getLogger("tokens.ratelimit")

GLOBAL_KEY = "all-callers"
REDIS_TIMEOUT = 0.5  # seconds; a slow counter store must not eat the request's time budget
SWEEP_INTERVAL = 60.0

# The notation of the `limits` library (limits.util.parse_many), less its quirks: an amount or a
# multiple of 0 is refused here rather than read as "nothing allowed" or "1".
_GRANULARITIES = {
    "second": 1, "minute": 60, "hour": 3600, "day": 86_400, "month": 2_592_000, "year": 31_104_000,
}
_SEPARATORS = re.compile(r"[,;|]")
# Matched against the lower-cased text: IGNORECASE alone costs a cold start 2 ms to compile.
_ONE_LIMIT = re.compile(r"\s*([0-9]+)\s*(?:/|\s*per\s*)\s*([0-9]+)?\s*([a-z]+?)s?\s*", re.ASCII)


class Limit(NamedTuple):
    amount: int
    multiples: int
    granularity: str  # second, minute, hour, day, month or year

    @property
    def window(self) -> int:
        """The window's length in seconds."""
        return self.multiples * _GRANULARITIES[self.granularity]

    def __str__(self) -> str:
        return f"{self.amount} per {self.multiples} {self.granularity}"


def parse_limits(text: str) -> tuple[Limit, ...]:
    """`10/minute;100 per hour` -> its limits; ValueError when any part is not in the notation."""
    limits = []
    for part in _SEPARATORS.split(text):
        match = _ONE_LIMIT.fullmatch(part.lower())
        if match is None:
            raise ValueError(f"{part.strip()[:40]!r} is not a rate limit")
        amount, multiples, granularity = match.groups()
        limit = Limit(int(amount), int(multiples or 1), granularity)
        if granularity not in _GRANULARITIES or limit.amount == 0 or limit.multiples == 0:
            raise ValueError(f"{part.strip()[:40]!r} is not a rate limit")
        limits.append(limit)
    return tuple(limits)


def seconds_until_one_fits(limit: Limit, previous: float, current: float, left_in_window: float) -> float:
    """0 when one more request fits, else how long until it does.

    `previous` and `current` are the counts of the last window and of this one; `left_in_window` is
    how long this one still runs. The previous window counts with the weight of its overlap with the
    last `limit.window` seconds, `left_in_window / window`.
    """
    window = limit.window
    if previous * left_in_window / window + current + 1 <= limit.amount:
        return 0.0
    if current + 1 <= limit.amount:  # the previous window's share fades in time within this one
        return left_in_window - (limit.amount - 1 - current) * window / previous
    # Only the next window helps: this one's count then fades as the previous did.
    return left_in_window + window * (1 - (limit.amount - 1) / current)


class Counter(Protocol):
    def wait(self, limit: Limit, key: str) -> float:
        """0 when one more request fits under `limit` for `key`, else seconds until it would."""
        ...

    def take(self, limit: Limit, key: str) -> float:
        """Count one request when it fits (returning 0); else count nothing and return the wait."""
        ...


class LocalCounter:
    """Sliding-window counters held in this process. Keys whose windows have both passed are
    dropped once a minute, so memory follows the callers of the last two windows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # key -> [window length, window number, count of the window before, count of this one]
        self._windows: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._next_sweep = clock() + SWEEP_INTERVAL

    def wait(self, limit: Limit, key: str) -> float:
        with self._lock:
            return self._wait(limit, key, self._clock(), count=False)

    def take(self, limit: Limit, key: str) -> float:
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now)
            return self._wait(limit, key, now, count=True)

    def __len__(self) -> int:
        return len(self._windows)

    def _wait(self, limit: Limit, key: str, now: float, *, count: bool) -> float:
        window = limit.window
        number, into = divmod(now, window)
        slot = f"{limit}:{key}"
        entry = self._windows.get(slot)
        previous = current = 0
        if entry is not None and entry[1] == number:
            previous, current = entry[2], entry[3]
        elif entry is not None and entry[1] == number - 1:
            previous = entry[3]
        wait = seconds_until_one_fits(limit, previous, current, window - into)
        if count and wait == 0:
            self._windows[slot] = [window, int(number), previous, current + 1]
        return wait

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        for slot, (window, number, _, _) in list(self._windows.items()):
            if number < now // window - 1:
                del self._windows[slot]


class SharedCounter:
    """Sliding-window counters in Redis, through the `limits` library, so that every instance sees
    the same counts. Redis errors arrive as `limits.errors.StorageError`."""

    def __init__(self, url: str, namespace: str) -> None:
        from limits.storage import RedisStorage
        from limits.strategies import SlidingWindowCounterRateLimiter

        from tokens.redisauth import connection_options

        self.storage: RedisStorage = RedisStorage(
            url,
            wrap_exceptions=True,
            # Two services (two bots) sharing one cache must not share their counts.
            key_prefix=f"LIMITS:{namespace}",
            # Azure's Redis with no password in the URL: the app's identity signs in (redisauth).
            **connection_options(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT),
        )
        self._strategy = SlidingWindowCounterRateLimiter(self.storage)
        self._items: dict[Limit, Any] = {}

    def wait(self, limit: Limit, key: str) -> float:
        item = self._item(limit)
        if self._strategy.test(item, key):
            return 0.0
        previous, left, current, _ = self.storage.get_sliding_window(item.key_for(key), limit.window)
        return max(seconds_until_one_fits(limit, previous, current, left or limit.window), 1.0)

    def take(self, limit: Limit, key: str) -> float:
        if self._strategy.hit(self._item(limit), key):
            return 0.0
        return max(self.wait(limit, key), 1.0)

    def close(self) -> None:
        # The pool's, not the client's close(): a client leaves a pool it was given open (redisauth's).
        self.storage.storage.connection_pool.close()

    def _item(self, limit: Limit) -> Any:
        item = self._items.get(limit)
        if item is None:
            from limits import parse

            item = self._items[limit] = parse(f"{limit.amount}/{limit.multiples} {limit.granularity}")
        return item


class RateLimiter:
    def __init__(
        self,
        per_caller: Sequence[Limit],
        global_limits: Sequence[Limit],
        storage_url: str = "memory://",
        *,
        namespace: str = "tokens",
        clock: Callable[[], float] = time.monotonic,
        retry_shared_after: float = 5.0,
        error_log_interval: float = 60.0,
    ) -> None:
        self._per_caller = tuple(per_caller)
        self._global = tuple(global_limits)
        self._clock = clock
        self.local = LocalCounter(clock)
        self._shared = SharedCounter(storage_url, namespace) if storage_url != "memory://" else None
        self._retry_shared_after = retry_shared_after
        self._error_log_interval = error_log_interval
        self._shared_down_until = -math.inf
        self._shared_failing = False
        self._last_error_log = -math.inf
        self._lock = threading.Lock()

    def check(self, caller_keys: Sequence[str], pool: str = "token") -> None:
        """Count one request for this caller and for everyone; raise RateLimited when over a limit.

        Each pool (minting, refreshing) has its own per-caller and global counts, so that refreshes,
        which anyone with any bearer string can send, use up neither a caller's allowance for page
        loads nor everyone's allowance for new tokens.
        """
        self._counting(lambda counter: self._check_with(counter, caller_keys, pool))

    def refuse_if_spent(self, caller_key: str, pool: str = "token") -> None:
        """RateLimited, counting nothing, when this caller has no allowance left (its denials count)."""

        def look(counter: Counter) -> None:
            for limit in self._per_caller:
                _refuse_if_waiting(counter.wait(limit, f"{pool}:{caller_key}"))

        self._counting(look)

    def count_denial(self, caller_key: str, pool: str = "token") -> None:
        """Charge a refused request to its caller's allowance (never to everyone's): a flood of
        forged credentials or bad bodies turns into 429s once the caller's allowance is spent."""

        def charge(counter: Counter) -> None:
            for limit in self._per_caller:
                counter.take(limit, f"{pool}:{caller_key}")

        self._counting(charge)

    def _counting(self, count: Callable[[Counter], None]) -> None:
        """Count in the shared store, or in this process while the shared store is unreachable."""
        shared = self._shared if self._clock() >= self._shared_down_until else None
        if shared is not None:
            from limits.errors import StorageError

            try:
                count(shared)
            except StorageError as exc:
                self._shared_failed(exc)
            else:
                if self._shared_failing:
                    self._shared_back()
                return
        count(self.local)

    def close(self) -> None:
        """Close the pooled connections to the shared store; a later check simply reconnects."""
        if self._shared is not None:
            self._shared.close()

    def _check_with(self, counter: Counter, caller_keys: Sequence[str], pool: str) -> None:
        everyone = f"{pool}:{GLOBAL_KEY}"
        callers = [f"{pool}:{key}" for key in caller_keys]
        # Look before counting: a refusal charges nothing and, in this process, creates no state.
        for limit in self._global:
            _refuse_if_waiting(counter.wait(limit, everyone))
        for key in callers:
            for limit in self._per_caller:
                _refuse_if_waiting(counter.wait(limit, key))
        # A caller known by several keys (an address and a user id) is counted on each.
        for key in callers:
            for limit in self._per_caller:
                _refuse_if_waiting(counter.take(limit, key))
        for limit in self._global:
            _refuse_if_waiting(counter.take(limit, everyone))

    def _shared_failed(self, exc: Exception) -> None:
        with self._lock:
            self._shared_failing = True
            now = self._clock()
            self._shared_down_until = now + self._retry_shared_after
            if now - self._last_error_log >= self._error_log_interval:
                self._last_error_log = now
                cause = getattr(exc, "storage_error", exc)
                log.error(
                    "Rate-limit storage unreachable (%s); counting per process until it is back",
                    type(cause).__name__,
                )

    def _shared_back(self) -> None:
        # Said once per outage, so the log shows when shared counting resumed, not only when it stopped.
        with self._lock:
            if self._shared_failing:
                self._shared_failing = False
                log.info("Rate-limit storage reachable again; counting is shared across instances")


def _refuse_if_waiting(seconds: float) -> None:
    if seconds > 0:
        raise RateLimited(retry_after=max(1, math.ceil(seconds)))
