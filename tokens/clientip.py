"""The caller's network address: taken from X-Forwarded-For as far as front ends are trusted, and
shortened for the audit trail."""

from __future__ import annotations

import ipaddress

UNKNOWN = "unknown"


def _strip_port(entry: str) -> str | None:
    """`203.0.113.5:1234`, `[2001:db8::1]:443`, a bare IPv4 or IPv6 address -> the address alone."""
    entry = entry.strip()
    if entry.startswith("["):
        host, bracket, _ = entry[1:].partition("]")
        entry = host if bracket else ""
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_address(forwarded_for: str | None, trusted_hops: int, peer: str | None = None) -> str:
    """The entry `trusted_hops` places from the right of X-Forwarded-For, port removed.

    Entries to the left of it were written by the client and prove nothing, so a caller cannot pick
    its own address. With 0 hops the header is ignored and the connection's peer address is used.
    """
    peer_address = _strip_port(peer) if peer else None
    if trusted_hops == 0 or not forwarded_for:
        return peer_address or UNKNOWN
    entries = [entry for entry in forwarded_for.split(",") if entry.strip()]
    if len(entries) < trusted_hops:
        # Fewer entries than trusted front ends: the request did not come through all of them.
        return peer_address or UNKNOWN
    return _strip_port(entries[-trusted_hops]) or UNKNOWN


def for_audit(address: str, mode: str) -> str | None:
    """`full`, `truncated` (IPv4 last octet zeroed, IPv6 to /48) or `none` (not recorded)."""
    if mode == "none":
        return None
    if mode == "full":
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return UNKNOWN
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
