"""Properties of the pure parts, against generated and hostile input (hypothesis).

Origin matching, body validation, client-address parsing, user-id derivation and audit sanitizing:
each property is a sentence of the SPEC that must hold for every input, not only for the examples the
other tests pick. Runs are derandomized, so CI sees the same inputs every time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokens.audit import EVENTS, MAX_STRING, build_record, format_record, outcome_for, sanitize
from tokens.body import MAX_BODY_BYTES, parse_token_body
from tokens.clientip import UNKNOWN, client_address, for_audit
from tokens.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from tokens.identity import new_user_id, user_id_from_claim
from tokens.origins import OriginPattern, is_allowed, parse_origin, parse_pattern
from tokens.text import MAX_NAME_LENGTH as MAX_USER_NAME

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Characters that hide, reorder or break text: controls, ANSI, bidi, zero-width, separators, BOM,
# lone surrogates, private use, unassigned, tags.
HOSTILE_CHARACTERS = (
    "\x00\t\n\r\x1b\x7f\x85\x9b\xad\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202e"
    "\u2060\u2066\u2069\ufeff\ufff9\ud800\udfff\ue000\u0378\uffff\U000e0001\U0010ffff"
)
CONTROL_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
characters = st.characters() | st.sampled_from(HOSTILE_CHARACTERS) | st.characters(
    min_codepoint=0xD800, max_codepoint=0xDFFF
)
any_text = st.text(characters, max_size=80)
ascii_text = st.text(st.characters(max_codepoint=127), max_size=40)


# -- origins ------------------------------------------------------------------------------------

ALLOWED_ORIGINS = ("https://www.contoso.com", "https://*.contoso.com", "http://localhost:3000")
PATTERNS: tuple[OriginPattern, ...] = tuple(
    pattern for pattern in map(parse_pattern, ALLOWED_ORIGINS) if pattern is not None
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
    assert is_allowed(text, PATTERNS) == expected_allowed(text)


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
    assert is_allowed(f"https://{label}.contoso.com", PATTERNS)
    assert is_allowed(f"https://{label.upper()}.Contoso.COM", PATTERNS)  # browsers lower-case the host
    assert not is_allowed(f"https://{label}.{second}.contoso.com", PATTERNS)
    assert not is_allowed(f"https://{label}contoso.com", PATTERNS)
    assert not is_allowed(f"http://{label}.contoso.com", PATTERNS)


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


# -- the body -----------------------------------------------------------------------------------

SPEC_BODY_ERRORS = (InvalidRequest, PayloadTooLarge, UnsupportedMediaType)
content_types = st.sampled_from(
    ["application/json", "Application/JSON; charset=UTF-8", "application/json; charset=latin-1", "text/plain", ""]
) | st.none() | any_text

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["userName", "userHandle", "x"]) | any_text, children, max_size=4),
    max_leaves=12,
)
token_bodies = st.fixed_dictionaries(
    {}, optional={"userName": any_text | json_values, "userHandle": any_text | json_values, "other": json_values}
)


def _encode(value: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


json_bodies = st.builds(_encode, token_bodies | json_values, st.booleans())


@PROPERTY
@given(st.binary(max_size=MAX_BODY_BYTES + 10) | json_bodies, content_types)
def test_body_validation_raises_only_the_spec_errors(body: bytes, content_type: str | None) -> None:
    with contextlib.suppress(*SPEC_BODY_ERRORS):
        parse_token_body(body, content_type)


@PROPERTY
@given(json_bodies)
def test_accepted_body_has_only_the_two_fields_and_a_clean_user_name(body: bytes) -> None:
    try:
        fields = parse_token_body(body, "application/json")
    except SPEC_BODY_ERRORS:
        return
    assert set(fields) <= {"userName", "userHandle"}
    name = fields.get("userName")
    if name is not None:
        assert isinstance(name, str)
        assert 0 < len(name) <= MAX_USER_NAME
        assert name == name.strip()
        assert not any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in name)
    handle = fields.get("userHandle")
    if handle is not None:
        assert isinstance(handle, str)
        handle.encode("utf-8")  # never a lone surrogate that would crash the JWT library


@PROPERTY
@given(st.text(st.sampled_from(HOSTILE_CHARACTERS) | st.characters(max_codepoint=127), max_size=20))
def test_accepted_user_handle_is_text_that_can_be_encoded_again(handle: str) -> None:
    """A `\\ud800` escape must not smuggle a lone surrogate past the body into the JWT library."""
    try:
        fields = parse_token_body(json.dumps({"userHandle": handle}).encode(), "application/json")
    except InvalidRequest:
        return
    fields["userHandle"].encode("utf-8")


@PROPERTY
@given(st.text(characters, min_size=1, max_size=MAX_USER_NAME))
def test_user_name_with_a_control_or_format_character_is_refused(name: str) -> None:
    body = json.dumps({"userName": name}).encode()
    if any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in name):
        with pytest.raises(InvalidRequest):
            parse_token_body(body, "application/json")
    else:
        assert parse_token_body(body, "application/json").get("userName") in (name.strip(), None)


@PROPERTY
@given(st.binary(max_size=MAX_BODY_BYTES), st.binary(min_size=1, max_size=64), content_types)
def test_body_over_the_limit_is_413_whatever_its_type(
    start: bytes, excess: bytes, content_type: str | None
) -> None:
    body = start + b" " * (MAX_BODY_BYTES - len(start)) + excess
    with pytest.raises(PayloadTooLarge):
        parse_token_body(body, content_type)


# -- the client address -------------------------------------------------------------------------

addresses = st.ip_addresses()


def canonical(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@st.composite
def proxy_entries(draw: st.DrawFn) -> tuple[str, str]:
    """An entry as a front end writes it, with or without a port, and the address it stands for."""
    address = draw(addresses)
    port = draw(st.none() | st.integers(1, 65535))
    if port is None:
        return str(address), canonical(address)
    if address.version == 6:
        return f"[{address}]:{port}", canonical(address)
    return f"{address}:{port}", canonical(address)


def is_address_or_unknown(result: str) -> bool:
    if result == UNKNOWN:
        return True
    try:
        return str(ipaddress.ip_address(result)) == result
    except ValueError:
        return False


@PROPERTY
@given(any_text | st.just(""), st.lists(proxy_entries(), min_size=1, max_size=4), st.none() | addresses)
def test_client_chosen_entries_never_become_the_client_address(
    client_part: str, trusted: list[tuple[str, str]], peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> None:
    """With N trusted hops, the N-th entry from the right is the address, whatever the client wrote
    to the left of it (more entries, commas, garbage, someone else's address)."""
    header = ", ".join([client_part, *(entry for entry, _ in trusted)])
    result = client_address(header, len(trusted), str(peer) if peer else None)
    assert result == trusted[0][1]


@PROPERTY
@given(any_text, st.integers(0, 5), st.none() | any_text | addresses.map(str))
def test_client_address_is_always_an_address_or_unknown(header: str, hops: int, peer: str | None) -> None:
    assert is_address_or_unknown(client_address(header, hops, peer))


@PROPERTY
@given(st.lists(proxy_entries(), min_size=0, max_size=3), st.integers(1, 3), st.none() | addresses)
def test_fewer_entries_than_trusted_hops_falls_back_to_the_peer(
    entries: list[tuple[str, str]], missing: int, peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> None:
    """The request skipped a front end: nothing in the header is trusted, not even the right-most."""
    header = ", ".join(entry for entry, _ in entries)
    result = client_address(header, len(entries) + missing, str(peer) if peer else None)
    assert result == (canonical(peer) if peer else UNKNOWN)


@PROPERTY
@given(any_text, addresses)
def test_zero_hops_ignores_the_header(header: str, peer: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert client_address(header, 0, str(peer)) == canonical(peer)


@PROPERTY
@given(addresses)
def test_truncated_audit_address_is_the_network_of_the_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    shown = for_audit(str(address), "truncated")
    assert shown is not None
    real = ipaddress.ip_address(canonical(address))
    prefix = 24 if real.version == 4 else 48
    assert ipaddress.ip_address(shown) == ipaddress.ip_network(f"{real}/{prefix}", strict=False).network_address
    assert for_audit(str(address), "none") is None


# -- user ids -----------------------------------------------------------------------------------

USER_ID = re.compile(r"dl_[A-Za-z0-9_-]{1,61}")
claims = st.text(characters | st.sampled_from("h_-.@ "), min_size=1, max_size=120)


@PROPERTY
@given(claims | st.from_regex(r"h_[0-9a-f]{40}", fullmatch=True))
def test_user_id_from_any_claim_is_a_dl_id_and_stable(claim: str) -> None:
    user_id = user_id_from_claim(claim)
    assert USER_ID.fullmatch(user_id)
    assert user_id_from_claim(claim) == user_id


@PROPERTY
@given(claims, claims)
def test_different_claims_give_different_user_ids(first: str, second: str) -> None:
    """Including a claim spelled like another claim's hash: no user can take another's id."""
    if first != second:
        assert user_id_from_claim(first) != user_id_from_claim(second)
    hashed = user_id_from_claim(first + "\x00")  # never plain, so always hashed
    assert user_id_from_claim(hashed[len("dl_") :]) != hashed


@PROPERTY
@given(st.from_regex(r"[A-Za-z0-9_-]{1,61}", fullmatch=True))
def test_a_claim_that_fits_is_kept_readable(claim: str) -> None:
    """Unless it starts with `h_`, which only hashed ids may."""
    user_id = user_id_from_claim(claim)
    if claim.startswith("h_"):
        assert re.fullmatch(r"dl_h_[0-9a-f]{40}", user_id)
    else:
        assert user_id == f"dl_{claim}"


def test_user_id_from_a_claim_with_a_lone_surrogate_is_a_dl_id() -> None:
    """A JWT claim may carry a lone surrogate as a `\\ud800` escape; hashing it once raised (a 500)."""
    assert USER_ID.fullmatch(user_id_from_claim("user\ud800"))


def test_new_user_ids_are_dl_ids_and_distinct() -> None:
    ids = {new_user_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(USER_ID.fullmatch(user_id) for user_id in ids)


# -- the audit record ---------------------------------------------------------------------------


def has_hidden_characters(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in text)


@PROPERTY
@given(st.text(characters, max_size=1000))
def test_sanitize_leaves_no_control_character_and_at_most_the_cap(value: str) -> None:
    clean = sanitize(value)
    assert not has_hidden_characters(clean)
    assert len(clean) <= MAX_STRING


optional_text = st.none() | st.text(characters, max_size=400)
records = st.builds(
    build_record,
    event=st.sampled_from(EVENTS),
    status=st.sampled_from([200, 400, 401, 403, 413, 415, 429, 500, 502, 503, 504]),
    user_id=optional_text,
    conversation_id=optional_text,
    auth_mode=st.text(characters, max_size=40),
    origin=optional_text,
    client_ip=optional_text,
    reason=optional_text,
    duration_ms=st.floats(0, 1e7),
    invocation_id=optional_text,
)


@PROPERTY
@given(records)
def test_every_string_in_a_record_is_clean_and_capped(record: dict[str, Any]) -> None:
    for value in record.values():
        if isinstance(value, str):
            assert not has_hidden_characters(value)
            assert len(value) <= MAX_STRING
    assert record["outcome"] == outcome_for(record["status"])


@PROPERTY
@given(records)
def test_a_formatted_record_is_one_ascii_line_that_parses_back(record: dict[str, Any]) -> None:
    line = format_record(record)
    assert line.isascii()
    assert line.isprintable()
    assert len(line.splitlines()) == 1
    assert json.loads(line) == record
