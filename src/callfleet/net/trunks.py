"""The address policy of tenants' SIP trunks: where an INVITE may be sent.

A trunk's host is chosen by a tenant, so without a check a call could open TCP or UDP
to the server itself, the operator's network or a cloud metadata service, and read
the answer back as a call outcome. A trunk passes the webhooks' rules
(`callfleet.net.ssrf.unsafe_reason`): every address it resolves to must be public.
The operator opens private and loopback targets with `CALLFLEET_TRUNK_ALLOW_PRIVATE=true`
or lists CIDRs in `CALLFLEET_TRUNK_ALLOW`; cloud metadata addresses and all of
169.254.0.0/16 stay refused whatever the settings say.

`resolve_trunk` is called when a trunk is added and again at every dial; the dial
connects to the addresses it returned, so a DNS answer cannot change in between.
Only IPv4 answers are asked for, because the SIP client speaks IPv4. The refusal is
one sentence whatever the reason, and names no address, so a tenant learns nothing
about the operator's network from it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final

from callfleet.config import Settings
from callfleet.domain.hosts import ip_literal
from callfleet.net.ssrf import ALWAYS_REFUSED, DNS_TIMEOUT_S, unsafe_reason

__all__ = [
    "ALLOW_SETTINGS",
    "TrunkPolicy",
    "TrunkRefused",
    "TrunkUnresolvable",
    "resolve_trunk",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTINGS: Final = "CALLFLEET_TRUNK_ALLOW_PRIVATE=true or CALLFLEET_TRUNK_ALLOW=<CIDRs>"


class TrunkRefused(ValueError):
    """The trunk's host resolves to an address the policy refuses."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        """For the operator's log only: never shown to the tenant."""
        super().__init__(
            "resolves to an address that is not an allowed call destination (loopback, "
            "private, link-local, carrier-grade NAT and cloud metadata addresses are "
            "refused). Use your carrier's public host name or address; an operator whose "
            f"carrier is on their own network can allow it with {ALLOW_SETTINGS}."
        )


class TrunkUnresolvable(OSError):
    """The trunk's host did not resolve (to an IPv4 address) in time."""


@dataclass(frozen=True)
class TrunkPolicy:
    """What the operator allows trunks to reach beyond public addresses."""

    allow_private: bool = False
    allow: tuple[IPNetwork, ...] = ()
    """Networks allowed even though private (metadata stays refused)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TrunkPolicy:
        return cls(settings.trunk_allow_private, settings.trunk_allow_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why a call must not go to `address`, or None if it may."""
        reason = unsafe_reason(address, allow_private=self.allow_private)
        if reason is None:
            return None
        if any(reason.endswith(always) for always in ALWAYS_REFUSED):
            return reason
        if any(address.version == net.version and address in net for net in self.allow):
            return None
        return reason

    def media_refusal(self, host: str) -> str | None:
        """Why RTP must not be sent to the host a trunk's SDP names, or None if it may.

        The same policy as the trunk's own address: a trunk that answers with
        `c=IN IP4 10.0.0.5` would otherwise point 50 packets a second at any host and
        port of the operator's network. Only IP literals: a name would be looked up on
        the event loop. `0.0.0.0` is RFC 2543's hold, to which nothing is sent."""
        if host == "0.0.0.0":
            return None
        literal = ip_literal(host)
        if literal is None:
            return "not an IP address"
        return self.refusal(literal)


async def _lookup(host: str, port: int) -> list[str]:
    literal = ip_literal(host)
    if literal is not None:
        return [str(literal)]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM),
            timeout=DNS_TIMEOUT_S,
        )
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        raise TrunkUnresolvable(f"{host!r} did not resolve within {DNS_TIMEOUT_S:g} s") from exc
    except (OSError, UnicodeError) as exc:
        raise TrunkUnresolvable(f"{host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TrunkUnresolvable(f"{host!r} has no IPv4 address")
    return addresses


async def resolve_trunk(host: str, port: int, policy: TrunkPolicy | None) -> list[str]:
    """The addresses of `host`, if the policy allows every one of them (None: our own
    destinations, the built-in simulator, which no tenant chose).

    Raises `TrunkRefused` if any address is refused and `TrunkUnresolvable` if the
    host does not resolve within a few seconds.
    """
    addresses = await _lookup(host, port)
    if policy is None:
        return addresses
    for text in addresses:
        reason = policy.refusal(ipaddress.ip_address(text))
        if reason is not None:
            raise TrunkRefused(host, text, reason)
    return addresses
