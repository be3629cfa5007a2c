"""The keep-warm timer's work: one GET to the service's own health route. Never Direct Line, never
raises: a failed ping is logged and the next tick tries again."""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import requests

log = logging.getLogger("tokens.warmup")

PING_TIMEOUT = 10.0


class PingResult(NamedTuple):
    url: str | None
    status: int | None
    latency_ms: float | None
    error: str | None = None


def ping(
    url: str | None,
    *,
    past_due: bool = False,
    session: requests.Session | None = None,
    timeout: float = PING_TIMEOUT,
) -> PingResult:
    if past_due:
        log.warning("Warm-up timer is past due; the instance may have been asleep")
    if not url:
        log.info("Warm-up: nothing to ping (set WARMUP_URL, or run where WEBSITE_HOSTNAME is set)")
        return PingResult(None, None, None, "no url")
    started = time.perf_counter()
    try:
        getter = session.get if session is not None else requests.get
        response = getter(url, timeout=timeout, allow_redirects=False)
        response.close()
    except Exception as exc:  # the timer must never raise, whatever the failure
        latency = (time.perf_counter() - started) * 1000
        log.warning("Warm-up ping failed after %.0f ms: %s", latency, type(exc).__name__)
        return PingResult(url, None, latency, type(exc).__name__)
    latency = (time.perf_counter() - started) * 1000
    log.info("Warm-up ping answered %s in %.0f ms", response.status_code, latency)
    return PingResult(url, response.status_code, latency)
