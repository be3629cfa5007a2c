"""The browser-origin allow-list: pure predicates, the CORS headers that follow from them, and the
log of refused origins.

An origin is compared in its serialized form (`scheme://host[:port]`) after a strict parse: anything a
browser would never send (paths, userinfo, trailing dots, non-ASCII, `null`) matches nothing. That is
an allow-list on purpose: a look-alike such as `https://contoso.com.evil.example` must fail closed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from tokens.text import one_line

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])"
_ORIGIN_RE = re.compile(rf"(https?)://({_HOST})(?::([0-9]{{1,5}}))?", re.ASCII)
_WILDCARD_RE = re.compile(rf"(https?)://\*\.({_LABEL}(?:\.{_LABEL})+)(?::([0-9]{{1,5}}))?", re.ASCII)
_ONE_LABEL_RE = re.compile(_LABEL, re.ASCII)

CORS_ALLOW_METHODS = "POST, OPTIONS"
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE = "600"


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    def serialize(self) -> str:
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


class OriginPattern(NamedTuple):
    """An exact origin, or `scheme://*.suffix[:port]` matching exactly one extra DNS label."""

    scheme: str
    host_suffix: str  # for an exact pattern, the whole host
    port: int
    wildcard: bool

    def matches(self, origin: Origin) -> bool:
        if origin.scheme != self.scheme or origin.port != self.port:
            return False
        if not self.wildcard:
            return origin.host == self.host_suffix
        label, dot, rest = origin.host.partition(".")
        return bool(dot) and rest == self.host_suffix and _ONE_LABEL_RE.fullmatch(label) is not None


def _port(scheme: str, text: str | None) -> int | None:
    if text is None:
        return _DEFAULT_PORTS[scheme]
    port = int(text)
    return port if 0 < port < 65536 else None


def parse_origin(text: str) -> Origin | None:
    """Parse an `Origin` header value; None for anything that is not a plain http(s) origin."""
    match = _ORIGIN_RE.fullmatch(text.lower()) if text.isascii() else None
    if match is None:
        return None
    scheme, host, port_text = match.groups()
    port = _port(scheme, port_text)
    return None if port is None else Origin(scheme, host, port)


def parse_pattern(text: str) -> OriginPattern | None:
    """Parse one ALLOWED_ORIGINS entry; None when it is neither an origin nor a one-label wildcard."""
    text = text.strip()
    if not text.isascii():  # before lower(): "\u212a".lower() is an ASCII "k"
        return None
    text = text.lower()
    wildcard = _WILDCARD_RE.fullmatch(text)
    if wildcard is not None:
        scheme, suffix, port_text = wildcard.groups()
        port = _port(scheme, port_text)
        return None if port is None else OriginPattern(scheme, suffix, port, wildcard=True)
    origin = parse_origin(text)
    if origin is None:
        return None
    return OriginPattern(origin.scheme, origin.host, origin.port, wildcard=False)


def is_allowed(origin_header: str, patterns: Iterable[OriginPattern]) -> bool:
    origin = parse_origin(origin_header)
    return origin is not None and any(pattern.matches(origin) for pattern in patterns)


def cors_headers(origin_header: str) -> dict[str, str]:
    """Headers for every response to an allowed origin: the origin echoed, never `*`. Retry-After
    is exposed so that a page can read how long to wait after a 429 or 503."""
    return {
        "Access-Control-Allow-Origin": origin_header,
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def preflight_headers(origin_header: str) -> dict[str, str]:
    return {
        **cors_headers(origin_header),
        "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": CORS_MAX_AGE,
    }


class RefusalLog:
    """One warning line per refused origin, so that an operator can see who was turned away, at most
    once a minute for each origin and `most` lines a minute in all: a flood of made-up origins cannot
    fill the log. The next line written says how many were held back."""

    def __init__(self, most: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self._most = most
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -60.0
        self._written = 0
        self._held_back = 0
        self._last_seen: dict[str, float] = {}
        self._log = logging.getLogger("tokens.origins")

    def refused(self, origin: str, where: str) -> None:
        shown = json.dumps(one_line(origin)[:256])
        with self._lock:
            now = self._clock()
            if now - self._window_start >= 60:
                self._window_start, self._written = now, 0
                self._last_seen = {key: seen for key, seen in self._last_seen.items() if now - seen < 60}
            if self._written >= self._most or now - self._last_seen.get(shown, -60.0) < 60:
                self._held_back += 1
                return
            self._written += 1
            self._last_seen[shown] = now
            held_back, self._held_back = self._held_back, 0
        note = f" ({held_back} more refusals not shown)" if held_back else ""
        self._log.warning(
            "Origin not allowed: %s on %s; add it to ALLOWED_ORIGINS if it is yours%s", shown, where, note
        )
