"""Per-caller and global rate limits: sliding-window counters, in this process or shared in Redis.

Limits are written in the `limits` library's notation (`10/minute`, `10 per minute;100/hour`) and
parsed here, so that the default `memory://` storage never imports `limits` (it costs a cold start
about 25 ms). Redis counts through `limits` itself, with the same sliding-window-counter strategy.

A sliding-window counter keeps two numbers per key and limit: the requests of the current window and
of the one before, weighted by how much of it still overlaps the last `window` seconds. Memory is
constant per key. Callers who were only ever denied are kept apart, in at most MAX_DENIED_SLOTS
counters (the oldest go first), so that a flood of refused requests from ever-new addresses costs a
bounded amount of memory whatever the limits' windows (a `/day` limit keeps a counter two days).

Order matters (see `RateLimiter.admit`): everything is looked at before anything is counted, under
one lock, so a caller refused by the global limit is neither charged nor remembered, however requests
interleave, and a caller refused by its own limit does not use up everyone else's global allowance.
A refusal's Retry-After is the longest wait among the limits that refuse: waiting it is enough.

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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from tokens.errors import RateLimited

if TYPE_CHECKING:
    from limits.storage import RedisStorage

log = logging.getLogger("tokens.ratelimit")

GLOBAL_KEY = "all-callers"
REDIS_TIMEOUT = 0.5  # seconds; a slow counter store must not eat the request's time budget
SWEEP_INTERVAL = 60.0
# Counters of callers who were only denied (each limit of each key is one): about 0.3 KiB each, so
# at most about 6 MiB in all (tests/test_ratelimit.py measures it).
MAX_DENIED_SLOTS = 20_000

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

    def take(self, limit: Limit, key: str, *, denied: bool = False) -> float:
        """Count one request when it fits (returning 0); else count nothing and return the wait.
        `denied`: the request was refused, and counts only against its caller's own allowance."""
        ...

    def give_back(self, limit: Limit, key: str) -> None:
        """Uncount one request counted in the current window (none when the window has moved on)."""
        ...


class LocalCounter:
    """Sliding-window counters held in this process. Keys whose windows have both passed are
    dropped once a minute, so memory follows the callers of the last two windows; the counters of
    callers who were only denied are kept apart, at most MAX_DENIED_SLOTS of them."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_denied: int = MAX_DENIED_SLOTS
    ) -> None:
        # slot -> [window length, window number, count of the window before, count of this one]
        self._windows: dict[str, list[int]] = {}
        self._denied: OrderedDict[str, list[int]] = OrderedDict()  # oldest first
        self._max_denied = max_denied
        self._lock = threading.Lock()
        self._clock = clock
        self._next_sweep = clock() + SWEEP_INTERVAL

    def wait(self, limit: Limit, key: str) -> float:
        with self._lock:
            return self._wait(limit, key, self._clock(), count=None)

    def take(self, limit: Limit, key: str, *, denied: bool = False) -> float:
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now)
            return self._wait(limit, key, now, count="denied" if denied else "counted")

    def give_back(self, limit: Limit, key: str) -> None:
        with self._lock:
            entry = self._windows.get(f"{limit}:{key}")
            if entry is not None and entry[1] == self._clock() // limit.window and entry[3] > 0:
                entry[3] -= 1

    def __len__(self) -> int:
        return len(self._windows) + len(self._denied)

    def _wait(self, limit: Limit, key: str, now: float, *, count: str | None) -> float:
        window = limit.window
        number, into = divmod(now, window)
        slot = f"{limit}:{key}"
        entry = self._windows.get(slot) or self._denied.get(slot)
        previous = current = 0
        if entry is not None and entry[1] == number:
            previous, current = entry[2], entry[3]
        elif entry is not None and entry[1] == number - 1:
            previous = entry[3]
        wait = seconds_until_one_fits(limit, previous, current, window - into)
        if count is not None and wait == 0:
            self._store(slot, [window, int(number), previous, current + 1], denied=count == "denied")
        return wait

    def _store(self, slot: str, entry: list[int], *, denied: bool) -> None:
        if not denied or slot in self._windows:  # a caller once counted stays among the counted
            self._denied.pop(slot, None)
            self._windows[slot] = entry
            return
        self._denied[slot] = entry
        self._denied.move_to_end(slot)
        while len(self._denied) > self._max_denied:
            self._denied.popitem(last=False)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        for slots in (self._windows, self._denied):
            for slot, (window, number, _, _) in list(slots.items()):
                if number < now // window - 1:
                    del slots[slot]


class SharedCounter:
    """Sliding-window counters in Redis, through the `limits` library, so that every instance sees
    the same counts. Redis errors arrive as `limits.errors.StorageError`."""

    def __init__(self, url: str, namespace: str, client_id: str | None = None) -> None:
        from limits.storage import RedisStorage
        from limits.strategies import SlidingWindowCounterRateLimiter

        from tokens.redisauth import connection_options

        self.storage: RedisStorage = RedisStorage(
            url,
            wrap_exceptions=True,
            # Two services (two bots) sharing one cache must not share their counts.
            key_prefix=f"LIMITS:{namespace}",
            # Azure's Redis with no password in the URL: the app's identity signs in (redisauth).
            **connection_options(
                url, client_id, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            ),
        )
        self._strategy = SlidingWindowCounterRateLimiter(self.storage)
        self._items: dict[Limit, Any] = {}

    def wait(self, limit: Limit, key: str) -> float:
        item = self._item(limit)
        if self._strategy.test(item, key):
            return 0.0
        previous, left, current, _ = self.storage.get_sliding_window(item.key_for(key), limit.window)
        return max(seconds_until_one_fits(limit, previous, current, left or limit.window), 1.0)

    def take(self, limit: Limit, key: str, *, denied: bool = False) -> float:
        # Redis expires a counter two windows after its last request, whoever it counted.
        if self._strategy.hit(self._item(limit), key):
            return 0.0
        return max(self.wait(limit, key), 1.0)

    def give_back(self, limit: Limit, key: str) -> None:
        item = self._item(limit)
        # The current window's counter, as `limits` names it (its Redis storage's sliding window).
        current = self.storage.prefixed_key(f"{{{item.key_for(key)}}}")
        redis: Any = self.storage.get_connection()
        redis.eval(_GIVE_BACK, 1, current)

    def close(self) -> None:
        # The pool's, not the client's close(): a client leaves a pool it was given open (redisauth's).
        self.storage.storage.connection_pool.close()

    def _item(self, limit: Limit) -> Any:
        item = self._items.get(limit)
        if item is None:
            from limits import parse

            item = self._items[limit] = parse(f"{limit.amount}/{limit.multiples} {limit.granularity}")
        return item


# Decrements a counter that is above 0, leaving its expiry as it is; nothing for a missing one.
_GIVE_BACK = """
local count = tonumber(redis.call('get', KEYS[1]) or '0')
if count > 0 then redis.call('decr', KEYS[1]) end
return count
"""


class RateLimiter:
    def __init__(
        self,
        per_caller: Sequence[Limit],
        global_limits: Sequence[Limit],
        storage_url: str = "memory://",
        *,
        namespace: str = "tokens",
        identity_client_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_shared_after: float = 5.0,
        error_log_interval: float = 60.0,
    ) -> None:
        self._per_caller = tuple(per_caller)
        self._global = tuple(global_limits)
        self._clock = clock
        self.local = LocalCounter(clock)
        shared = storage_url != "memory://"
        self._shared = SharedCounter(storage_url, namespace, identity_client_id) if shared else None
        self._retry_shared_after = retry_shared_after
        self._error_log_interval = error_log_interval
        self._shared_down_until = -math.inf
        self._shared_failing = False
        self._last_error_log = -math.inf
        self._lock = threading.Lock()
        self._admitting = threading.Lock()

    def admit(self, caller_keys: Sequence[str], pool: str = "token") -> None:
        """Count one request for this caller and for everyone; raise RateLimited, counting nothing,
        when over any limit. Looking and counting happen under one lock, so that requests that
        interleave cannot charge a caller for a request the global limit refuses.

        Each pool (minting, refreshing) has its own per-caller and global counts, so that refreshes,
        which anyone with any bearer string can send, use up neither a caller's allowance for page
        loads nor everyone's allowance for new tokens.
        """
        with self._admitting:
            self._counting(lambda counter: self._admit_with(counter, caller_keys, pool))

    def refuse_if_spent(self, caller_key: str, pool: str = "token") -> None:
        """RateLimited, counting nothing, when this caller has no allowance left (its denials count)."""

        def look(counter: Counter) -> None:
            _refuse_if_waiting([counter.wait(limit, f"{pool}:{caller_key}") for limit in self._per_caller])

        self._counting(look)

    def count_denial(self, caller_key: str, pool: str = "token") -> None:
        """Charge a refused request to its caller's allowance (never to everyone's): a flood of
        forged credentials or bad bodies turns into 429s once the caller's allowance is spent."""

        def charge(counter: Counter) -> None:
            for limit in self._per_caller:
                counter.take(limit, f"{pool}:{caller_key}", denied=True)

        self._counting(charge)

    def give_back(self, pool: str = "token") -> None:
        """Uncount an admitted request from everyone's allowance: it was denied after all (Direct
        Line no longer knows the conversation), and no denial spends the global allowance."""

        def uncount(counter: Counter) -> None:
            for limit in self._global:
                counter.give_back(limit, f"{pool}:{GLOBAL_KEY}")

        self._counting(uncount)

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

    def _admit_with(self, counter: Counter, caller_keys: Sequence[str], pool: str) -> None:
        everyone = f"{pool}:{GLOBAL_KEY}"
        callers = [f"{pool}:{key}" for key in caller_keys]
        # Look before counting: a refusal charges nothing and, in this process, creates no state.
        waits = [counter.wait(limit, everyone) for limit in self._global]
        waits += [counter.wait(limit, key) for key in callers for limit in self._per_caller]
        _refuse_if_waiting(waits)
        # A caller known by several keys (an address and a user id) is counted on each. Under the
        # lock these fit, as just seen; only another instance sharing Redis can have taken the room.
        taken = [counter.take(limit, key) for key in callers for limit in self._per_caller]
        taken += [counter.take(limit, everyone) for limit in self._global]
        _refuse_if_waiting(taken)

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


def _refuse_if_waiting(waits: Sequence[float]) -> None:
    """RateLimited when any limit asks for a wait, with the longest: waiting it is enough for all."""
    longest = max(waits, default=0.0)
    if longest > 0:
        raise RateLimited(retry_after=max(1, math.ceil(longest)))
