"""The origin allow-list as a pure predicate."""

from __future__ import annotations

import pytest

from tokens.origins import is_allowed, parse_pattern

PATTERNS = tuple(
    p for p in (parse_pattern(t) for t in ["https://www.contoso.com", "https://*.fabrikam.com", "http://localhost:3000"]) if p
)


@pytest.mark.parametrize(
    "origin",
    [
        "https://www.contoso.com",
        "https://WWW.Contoso.COM",
        "https://www.contoso.com:443",
        "https://a.fabrikam.com",
        "https://shop-1.fabrikam.com",
        "http://localhost:3000",
    ],
)
def test_allowed(origin: str) -> None:
    assert is_allowed(origin, PATTERNS)


@pytest.mark.parametrize(
    "origin",
    [
        "https://fabrikam.com",
        "https://a.b.fabrikam.com",
        "https://.fabrikam.com",
        "https://-a.fabrikam.com",
        "https://a.fabrikam.com.evil.example",
        "http://a.fabrikam.com",
        "http://localhost:3001",
        "http://localhost",
        "https://www.contoso.com:444",
        "null",
        "",
    ],
)
def test_refused(origin: str) -> None:
    assert not is_allowed(origin, PATTERNS)


@pytest.mark.parametrize(
    "entry",
    ["*", "https://*", "https://*.com.", "https://a.*.com", "https://*.*.com", "contoso.com", "https://x.com/path", "null"],
)
def test_invalid_patterns_are_rejected(entry: str) -> None:
    assert parse_pattern(entry) is None
