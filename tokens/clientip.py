"""The caller's network address: taken from X-Forwarded-For as far as front ends are trusted, and
shortened for the audit trail.

The address keys the per-caller rate limit of anonymous callers, so it must be something the caller
cannot choose: only the entries written by trusted front ends count, and every spelling of one
address (with or without a port, IPv4 or IPv4-mapped IPv6, upper or lower case) comes out the same.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

UNKNOWN = "unknown"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Client(NamedTuple):
    """A request's client address, parsed once (None: no usable address), and what is made of it."""

    ip: IPAddress | None

    def limit_key(self, ipv6_prefix: int = 64) -> str:
        """What an anonymous caller's allowance is counted on (see `rate_limit_network`)."""
        return "ip:" + _network(self.ip, ipv6_prefix)

    def for_audit(self, mode: str) -> str | None:
        """`full`, `truncated` (IPv4 last octet zeroed, IPv6 to /48) or `none` (not recorded)."""
        if mode == "none":
            return None
        if self.ip is None:
            return UNKNOWN
        if mode == "full":
            return str(self.ip)
        return str(_masked(self.ip, 24 if self.ip.version == 4 else 48))


def _parse(entry: str) -> IPAddress | None:
    """`203.0.113.5`, `203.0.113.5:1234`, `2001:db8::1`, `[2001:db8::1]:443` -> the address alone.

    Anything else (a host name, `unknown`, an obfuscated `_hidden` identifier, a bad port) is None.
    """
    entry = entry.strip()
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        # Brackets are IPv6's way to carry a port; a bracketed IPv4 address is not a valid entry.
        if not bracket or ":" not in host or (rest and not _is_port_suffix(rest)):
            return None
        entry = host
    elif entry.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has two colons or more
        host, _, port = entry.partition(":")
        if not port.isdigit():
            return None
        entry = host
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; they are the same caller, and
        # truncating such an address to /48 for the audit would erase it entirely.
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        # A zone (`fe80::1%eth0`) names our own interface, not the caller.
        if address.scope_id is not None:
            return ipaddress.IPv6Address(str(address).partition("%")[0])
    return address


def _is_port_suffix(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()


def client_of(forwarded_for: str | None, trusted_hops: int, peer: str | None = None) -> Client:
    """The entry `trusted_hops` places from the right of X-Forwarded-For, port removed.

    Entries to the left of it were written by the client and prove nothing, so a caller cannot pick
    its own address. With 0 hops the header is ignored and the connection's peer address is used.
    When there is no usable address the result has none: such callers share one allowance rather
    than each getting a fresh one.
    """
    entries = [entry for entry in (forwarded_for or "").split(",") if entry.strip()]
    # With no header to believe, or fewer entries than trusted front ends (the request did not come
    # through all of them), only the connection itself can say who it is.
    believed = 0 < trusted_hops <= len(entries)
    chosen = entries[-trusted_hops] if believed else peer
    return Client(_parse(chosen) if chosen else None)


def rate_limit_network(address: str, ipv6_prefix: int = 64) -> str:
    """What an anonymous caller's allowance is counted on: the IPv4 address, or its IPv6 network
    (a /64 by default).

    One home or office connection is given at least a whole IPv6 /64 and can send from any address in
    it, so counting per IPv6 address would hand such a caller 2**64 fresh allowances. Many providers
    hand out a /56 or a /48: stricter sites count by those (RATE_LIMIT_IPV6_PREFIX).
    """
    return _network(_parse(address), ipv6_prefix)


def _network(ip: IPAddress | None, ipv6_prefix: int) -> str:
    if ip is None:
        return UNKNOWN
    if ip.version == 4:
        return str(ip)
    return f"{_masked(ip, ipv6_prefix)}/{ipv6_prefix}"


def _masked(ip: IPAddress, prefix: int) -> IPAddress:
    """The first address of `ip`'s network of `prefix` bits (what ip_network(...).network_address
    gives, by arithmetic rather than by formatting and parsing a network: once per request)."""
    host_bits = ip.max_prefixlen - prefix
    return type(ip)(int(ip) >> host_bits << host_bits)
