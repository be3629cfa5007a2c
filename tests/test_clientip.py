"""The client address from X-Forwarded-For per TRUSTED_PROXY_HOPS, and its shortened audit form."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile import PROPERTY, any_text
from tokens.clientip import UNKNOWN, client_of, rate_limit_network


def client_address(forwarded_for: str | None, trusted_hops: int, peer: str | None = None) -> str:
    """The client address `client_of` finds, as text; `unknown` when there is none."""
    ip = client_of(forwarded_for, trusted_hops, peer).ip
    return str(ip) if ip else UNKNOWN


def for_audit(address: str, mode: str) -> str | None:
    """How the audit record shows a caller at `address` (its peer address, no proxy)."""
    return client_of(None, 0, peer=address).for_audit(mode)


# -- one entry, every spelling ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("203.0.113.5:50123", "203.0.113.5"),
        ("  203.0.113.5:443  ", "203.0.113.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::1", "::1"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("[::ffff:203.0.113.5]:8080", "203.0.113.5"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%eth0]:443", "fe80::1"),
    ],
)
def test_ipv4_and_ipv6_entries_give_the_address_without_port(entry: str, address: str) -> None:
    assert client_address(entry, 1) == address


@pytest.mark.parametrize(
    "entry",
    [
        "unknown",
        "_hidden",
        "client.example.com",
        "client.example.com:443",
        "203.0.113",
        "203.0.113.256",
        "01.2.3.4",
        "203.0.113.5:",
        "203.0.113.5:https",
        "203.0.113.5:80:81",
        "[203.0.113.5]:80",
        "[2001:db8::1",
        "[2001:db8::1]443",
        "[2001:db8::1]:",
        "2001:db8::zz",
        "203.0.113.5\x00",
        "<script>",
    ],
)
def test_garbage_entry_is_unknown(entry: str) -> None:
    assert client_address(f"198.51.100.1, {entry}", 1) == UNKNOWN


def test_every_garbage_entry_maps_to_one_key_so_garbage_buys_no_fresh_allowance() -> None:
    assert client_address("junk-1", 1) == client_address("junk-2", 1) == UNKNOWN


# -- hops ------------------------------------------------------------------------------------------

CHAIN = "198.51.100.1, 203.0.113.5:50000, 10.0.0.7"


@pytest.mark.parametrize(
    ("hops", "address"),
    [(1, "10.0.0.7"), (2, "203.0.113.5"), (3, "198.51.100.1")],
)
def test_client_is_the_entry_that_many_hops_from_the_right(hops: int, address: str) -> None:
    assert client_address(CHAIN, hops) == address


def test_zero_hops_ignores_the_header_and_uses_the_peer() -> None:
    assert client_address(CHAIN, 0, peer="192.0.2.9") == "192.0.2.9"


def test_zero_hops_without_a_peer_is_unknown() -> None:
    assert client_address(CHAIN, 0) == UNKNOWN


def test_peer_with_a_port_is_stripped_too() -> None:
    assert client_address(None, 0, peer="[2001:db8::9]:61000") == "2001:db8::9"


def test_entries_left_of_the_trusted_ones_cannot_choose_the_address() -> None:
    """A client that sends its own X-Forwarded-For only adds entries on the left."""
    forged = [f"192.0.2.{n}, 203.0.113.5" for n in range(1, 6)]
    assert {client_address(header, 1) for header in forged} == {"203.0.113.5"}
    two_hops = [f"192.0.2.{n}, 203.0.113.5:1234, 10.0.0.7" for n in range(1, 6)]
    assert {client_address(header, 2) for header in two_hops} == {"203.0.113.5"}


def test_empty_entries_do_not_shift_the_trusted_position() -> None:
    assert client_address("192.0.2.1, , ,203.0.113.5", 1) == "203.0.113.5"
    assert client_address(",,203.0.113.5, 10.0.0.7", 2) == "203.0.113.5"


@pytest.mark.parametrize(
    ("header", "hops"),
    [("203.0.113.5", 2), ("203.0.113.5, 10.0.0.7", 3), (" , ", 1)],
)
def test_too_few_entries_fall_back_to_the_peer(header: str, hops: int) -> None:
    assert client_address(header, hops, peer="192.0.2.9:5000") == "192.0.2.9"
    assert client_address(header, hops) == UNKNOWN


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_falls_back_to_the_peer(header: str | None) -> None:
    assert client_address(header, 1, peer="192.0.2.9") == "192.0.2.9"
    assert client_address(header, 1) == UNKNOWN


def test_garbage_peer_is_unknown() -> None:
    assert client_address(None, 0, peer="not-an-address") == UNKNOWN


def test_ipv4_and_its_ipv6_mapped_form_are_one_caller() -> None:
    assert client_address("::ffff:203.0.113.5", 1) == client_address("203.0.113.5:1", 1)


# -- what an allowance is counted on ---------------------------------------------------------------


def test_ipv4_caller_is_counted_by_its_address() -> None:
    assert rate_limit_network("203.0.113.7") == "203.0.113.7"


def test_ipv6_caller_is_counted_by_its_64_so_rotating_addresses_gains_nothing() -> None:
    addresses = ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::42"]
    assert {rate_limit_network(address) for address in addresses} == {"2001:db8:1:2::/64"}


def test_neighbouring_ipv6_64s_are_different_callers() -> None:
    assert rate_limit_network("2001:db8:1:2::1") != rate_limit_network("2001:db8:1:3::1")


def test_unknown_address_is_counted_as_unknown() -> None:
    assert rate_limit_network(UNKNOWN) == UNKNOWN


# -- the audit form --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "mode", "recorded"),
    [
        ("203.0.113.57", "full", "203.0.113.57"),
        ("203.0.113.57", "truncated", "203.0.113.0"),
        ("203.0.113.57", "none", None),
        ("2001:db8:abcd:12:3456::1", "full", "2001:db8:abcd:12:3456::1"),
        ("2001:db8:abcd:12:3456::1", "truncated", "2001:db8:abcd::"),
        ("2001:db8:abcd:12:3456::1", "none", None),
        ("::ffff:203.0.113.57", "truncated", "203.0.113.0"),
        (UNKNOWN, "full", UNKNOWN),
        (UNKNOWN, "truncated", UNKNOWN),
        (UNKNOWN, "none", None),
    ],
)
def test_audit_form_is_full_truncated_or_none(address: str, mode: str, recorded: str | None) -> None:
    assert for_audit(address, mode) == recorded


def test_truncated_ipv6_keeps_exactly_the_first_48_bits() -> None:
    assert for_audit("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "truncated") == "2001:db8:ffff::"


def test_audit_never_records_garbage_verbatim() -> None:
    assert for_audit("<script>alert(1)</script>", "full") == UNKNOWN


# -- properties: the client address ----------------------------------------------------------------

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


def test_a_stricter_site_counts_ipv6_callers_by_a_wider_network() -> None:
    neighbours = ["2001:db8:0:1::1", "2001:db8:0:ff::1"]  # two /64s of one /56
    assert len({rate_limit_network(address) for address in neighbours}) == 2
    assert len({rate_limit_network(address, 56) for address in neighbours}) == 1
    assert rate_limit_network("2001:db8:0:ff::1", 48) == "2001:db8::/48"
