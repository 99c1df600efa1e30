"""`SipClientConfig`: where our SIP user-agent client binds and what it offers, and
`SipLimits`: what its listener takes from the network."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from callfleet.telephony.sip.transaction import SipTimers

__all__ = ["SipClientConfig", "SipLimits"]


@dataclass(frozen=True)
class SipLimits:
    """Bounds on what the SIP listener accepts; anyone who can reach its port can send."""

    trusted_peers: tuple[str, ...] = ()
    """Addresses or CIDRs whose requests are taken besides the hosts we dial (trunks and
    the simulator are trusted once dialled). Requests from anyone else are dropped."""
    max_server_transactions: int = 4096
    """Incoming transactions remembered at once (32 s each); more get 503, unstored."""
    max_content_length: int = 64 * 1024
    """Largest body a TCP message may announce; more closes the connection."""
    max_tcp_connections: int = 256
    """Inbound TCP connections at once; a connection past this is closed at once."""
    tcp_idle_timeout_s: float | None = 120.0
    """An inbound TCP connection with no data this long is closed (RFC 5626
    keep-alives count as data); None: never."""

    def __post_init__(self) -> None:
        for peer in self.trusted_peers:
            ipaddress.ip_network(peer, strict=False)  # ValueError names a bad entry

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(peer, strict=False) for peer in self.trusted_peers)


@dataclass(frozen=True)
class SipClientConfig:
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    transport: str = "udp"
    advertised_host: str | None = None
    """The address the peer can reach us at (Via, Contact, SDP); defaults to bind_host."""
    user: str = "callfleet"
    user_agent: str = "callfleet"
    timers: SipTimers = field(default_factory=SipTimers)
    session_expires_s: int | None = 1800
    """Offered Session-Expires (RFC 4028); None to not ask for session timers."""
    limits: SipLimits = field(default_factory=SipLimits)
