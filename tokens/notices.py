"""An operator's notice that a condition persists, written at most once a minute.

A misconfiguration (a refused key, the wrong region, Enhanced authentication) fails every request
alike; each request has its own audit record already, so the log says what to fix once a minute
rather than once a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class Notice:
    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None

    def write(self, message: str, *args: object) -> None:
        """Log `message % args` unless this notice was written less than `interval` seconds ago."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                return
            self._last = now
        self._logger.log(self._level, message, *args)
