"""Per-webhook admission: client addresses (allowlist, trusted proxies) and rate limits."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence

from triggerd.config.models import IPNetwork, RateLimit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(remote: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the first untrusted
    address of X-Forwarded-For read from the right (the part no client could forge)."""
    peer = _address(remote)
    if peer is None or not forwarded_for or not _within(peer, trusted):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            return peer  # a garbled chain is not believed
        if not _within(address, trusted):
            return address
    return peer


def allowed(address: IPAddress | None, allowlist: Sequence[IPNetwork]) -> bool:
    return not allowlist or (address is not None and _within(address, allowlist))


class TokenBucket:
    """`requests` tokens refilled evenly over `per` seconds; the bucket holds at most `requests`."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.capacity = float(limit.requests)
        self.rate = limit.requests / limit.per if limit.per > 0 else math.inf
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> float:
        """0 when a request may pass (a token is spent); else the seconds until one will."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
