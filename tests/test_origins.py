"""The origin allow-list as a pure predicate."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile import PROPERTY, any_text, ascii_text, characters
from tokens.origins import OriginPattern, is_allowed, parse_origin, parse_pattern

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


# -- properties: origins ---------------------------------------------------------------------------

PROPERTY_ORIGINS = ("https://www.contoso.com", "https://*.contoso.com", "http://localhost:3000")
PROPERTY_PATTERNS: tuple[OriginPattern, ...] = tuple(
    pattern for pattern in map(parse_pattern, PROPERTY_ORIGINS) if pattern is not None
)
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
DEFAULT_PORTS = {"http": 80, "https": 443}


def expected_allowed(text: str) -> bool:
    """The SPEC's rule, restated without the module: after lower-casing (ASCII only) and dropping a
    default port, the origin is byte-equal to an allowed one, or one DNS label under the wildcard."""
    if not text.isascii():
        return False
    match = re.fullmatch(r"(https?)://([^:/?#@\\\s]+)(?::([0-9]{1,5}))?", text.lower())
    if match is None:
        return False
    scheme, host, port_text = match.groups()
    port = DEFAULT_PORTS[scheme] if port_text is None else int(port_text)
    if (scheme, port) == ("https", 443):
        if host == "www.contoso.com":
            return True
        label, dot, rest = host.partition(".")
        return dot == "." and rest == "contoso.com" and DNS_LABEL.fullmatch(label) is not None
    return (scheme, host, port) == ("http", "localhost", 3000)


# Look-alikes: pieces of the allowed origins recombined with the separators, spellings and
# characters that trip up origin checks.
SCHEMES = ["https://", "http://", "HTTPS://", "Https://", "https:/", "https:///", "//", "ftp://", "wss://", ""]
HOST_PIECES = [
    "www", "contoso", "com", "a", "evil", "example", "localhost", "xn--contoso-", "xn--80ak6aa92e",
    "wwwcontoso", "contoso-com", "c\u043entoso", "\u212aontoso", "WWW", "Contoso", "-a", "a-", "0", "a_b",
    "*", "%2e", "%77ww", "a" * 63, "b" * 64, "127.0.0.1", "[::1]",
]
SEPARATORS = [".", ".", ".", "..", "@", "\\", "/", "#", "?", "%2e", "\u3002", "\uff0e", ":", " ", ""]
SUFFIXES = ["", "", "", ":443", ":0443", ":80", ":3000", ":8443", ":0", ":65536", ":", ".", "/", "/path",
            "?x", "#x", "\u200b", "\x00", ",https://evil.example", " "]


@st.composite
def look_alike_origins(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.sampled_from(HOST_PIECES), min_size=1, max_size=4))
    separators = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(pieces), max_size=len(pieces)))
    host = "".join(piece + separator for piece, separator in zip(pieces, separators, strict=True))
    tail = draw(st.sampled_from(["contoso.com", "contoso.com", "contoso.com.evil.example", ""]))
    return draw(st.sampled_from(SCHEMES)) + host + tail + draw(st.sampled_from(SUFFIXES))


@st.composite
def mutated_allowed_origins(draw: st.DrawFn) -> str:
    """An allowed origin with one character inserted, replaced, deleted or its case flipped."""
    text = draw(st.sampled_from(["https://www.contoso.com", "https://chat.contoso.com", "http://localhost:3000"]))
    index = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from("./:@\\#?%-_*0aA\u0430\u212a\u200b ") | characters)
    edit = draw(st.sampled_from(["insert", "replace", "delete", "swapcase"]))
    if edit == "insert":
        return text[:index] + char + text[index:]
    if edit == "replace":
        return text[:index] + char + text[index + 1 :]
    if edit == "delete":
        return text[:index] + text[index + 1 :]
    return text[:index] + text[index:].swapcase()


origin_candidates = look_alike_origins() | mutated_allowed_origins() | any_text | ascii_text


@PROPERTY
@given(origin_candidates)
def test_origin_is_allowed_exactly_when_it_normalises_to_an_allowed_origin(text: str) -> None:
    assert is_allowed(text, PROPERTY_PATTERNS) == expected_allowed(text)


@PROPERTY
@given(origin_candidates)
def test_an_allowed_origin_parses_to_a_plain_ascii_origin(text: str) -> None:
    origin = parse_origin(text)
    if origin is not None:
        serialized = origin.serialize()
        assert serialized.isascii() and serialized == serialized.lower()
        assert parse_origin(serialized) == origin


@PROPERTY
@given(st.from_regex(DNS_LABEL, fullmatch=True), st.from_regex(DNS_LABEL, fullmatch=True))
def test_wildcard_matches_one_label_and_never_two_or_none(label: str, second: str) -> None:
    assert is_allowed(f"https://{label}.contoso.com", PROPERTY_PATTERNS)
    assert is_allowed(f"https://{label.upper()}.Contoso.COM", PROPERTY_PATTERNS)  # browsers lower-case the host
    assert not is_allowed(f"https://{label}.{second}.contoso.com", PROPERTY_PATTERNS)
    assert not is_allowed(f"https://{label}contoso.com", PROPERTY_PATTERNS)
    assert not is_allowed(f"http://{label}.contoso.com", PROPERTY_PATTERNS)


@PROPERTY
@given(origin_candidates)
def test_an_allowed_origins_entry_is_ascii_and_never_widens_to_a_look_alike(text: str) -> None:
    """Whatever an operator writes, a pattern that parses is ASCII throughout, so no Unicode
    look-alike (a letter that lower-cases or normalises to ASCII) can slip into it."""
    pattern = parse_pattern(text)
    if pattern is not None:
        assert text.strip().isascii()
        assert pattern.host_suffix.isascii()


def test_a_pattern_with_a_non_ascii_letter_that_lower_cases_to_ascii_is_refused() -> None:
    """`\\u212a` (KELVIN SIGN) lower-cases to an ASCII `k`: the entry must not turn into `…kom`."""
    assert parse_pattern("https://www.contoso.\u212aom") is None
