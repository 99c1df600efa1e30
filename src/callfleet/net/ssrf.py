"""The guard that keeps user-supplied webhook URLs from reaching our own network.

A webhook URL is chosen by an API user, so without a check a delivery could be aimed at the
server itself, the operator's private network or a cloud metadata service (server-side
request forgery). `check_url_syntax` is the cheap check made when a request is validated
(pure, so it lives in `callfleet.domain.urls`; re-exported here with its errors);
`resolve_and_check` is made before every attempt: it resolves the host (A and AAAA) and
refuses the target if *any* address is loopback, private, link-local, carrier-grade NAT,
unspecified, multicast, reserved or otherwise not globally routable, including IPv6 forms
that embed such an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64), following the rules of
Stripe's Smokescreen proxy. Operators who deliver to receivers on their own network set
`CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true`; cloud metadata addresses (169.254.169.254,
fd00:ec2::254, fe80::a9fe:a9fe, 100.100.100.200, 192.0.0.192, 168.63.129.16) and all of
169.254.0.0/16 stay refused even then, because no legitimate receiver lives there. The
caller should connect to the returned addresses rather than resolve the name again, so a
DNS answer cannot change in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import ClassVar, Final

import httpx

from callfleet.domain.urls import (
    MAX_URL_LENGTH,
    InvalidWebhookUrl,
    WebhookTargetError,
    check_url_syntax,
)

__all__ = [
    "ALLOW_PRIVATE_SETTING",
    "ALWAYS_REFUSED",
    "MAX_URL_LENGTH",
    "InvalidWebhookUrl",
    "UnresolvableTarget",
    "UnsafeTarget",
    "WebhookTargetError",
    "check_url_syntax",
    "resolve_and_check",
    "unsafe_reason",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_SETTING: Final = "CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true"
DNS_TIMEOUT_S: Final = 5.0

_METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure IMDS, OpenStack, DigitalOcean
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure's wire server (a public address, so named here)
        "fe80::a9fe:a9fe",  # 169.254.169.254 as an IPv6 link-local (OpenStack, Oracle)
    )
)
_METADATA: Final = "a cloud metadata address"
_IPV4_LINK_LOCAL: Final = ipaddress.IPv4Network("169.254.0.0/16")
# Clouds put metadata and instance services anywhere in 169.254.0.0/16, and no
# legitimate receiver or carrier lives there, so the whole range stays refused.
_IPV4_LINK_LOCAL_REASON: Final = "a link-local address (169.254.0.0/16, home of cloud metadata)"
ALWAYS_REFUSED: Final = frozenset({_METADATA, _IPV4_LINK_LOCAL_REASON})
"""The reasons no `allow_private` setting lifts."""
_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64: Final = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)


class UnsafeTarget(WebhookTargetError, ValueError):
    """The webhook host resolves to an address that deliveries must not reach."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        hint = (
            "Cloud metadata addresses are always refused."
            if any(reason.endswith(r) for r in ALWAYS_REFUSED)  # IPv6 forms end alike
            else f"Use a publicly reachable URL, or if the receiver is meant to be on the "
            f"operator's own network, set {ALLOW_PRIVATE_SETTING}."
        )
        super().__init__(
            f"webhook target {host!r} resolves to {address}, {reason}; refused to prevent "
            f"server-side request forgery. {hint}"
        )


class UnresolvableTarget(WebhookTargetError):
    """The webhook host did not resolve; DNS may recover, so the delivery is retried."""

    retryable: ClassVar[bool] = True


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 transition form carries, if it is one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def unsafe_reason(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Say why deliveries must not reach `address`, or return None if they may.

    With `allow_private` only cloud metadata addresses and 169.254.0.0/16 (`ALWAYS_REFUSED`)
    are refused.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(address.compressed.split("%", 1)[0])
    if address in _METADATA_ADDRESSES:
        return _METADATA
    if isinstance(address, ipaddress.IPv4Address) and address in _IPV4_LINK_LOCAL:
        return _IPV4_LINK_LOCAL_REASON
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = unsafe_reason(embedded, allow_private=allow_private)
            if inner is not None:
                return f"an IPv6 form of {embedded}, which is {inner}"
    if allow_private:
        return None
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT (100.64.0.0/10) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def _host_and_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded, IPv6 brackets removed
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return host, port


async def resolve_and_check(url: str, *, allow_private: bool) -> list[str]:
    """Resolve the host of `url` and return its addresses if every one of them is safe.

    Raises `InvalidWebhookUrl` for a malformed URL, `UnsafeTarget` if any address is
    refused (see the module docstring) and `UnresolvableTarget` if the host does not
    resolve within a few seconds.
    """
    check_url_syntax(url)
    host, port = _host_and_port(url)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM),
            timeout=DNS_TIMEOUT_S,
        )
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        raise UnresolvableTarget(
            f"webhook host {host!r} did not resolve within {DNS_TIMEOUT_S:g} s"
        ) from exc
    except (OSError, UnicodeError) as exc:
        raise UnresolvableTarget(f"webhook host {host!r} does not resolve: {exc}") from exc

    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        text = str(sockaddr[0])
        if text in addresses:
            continue
        reason = unsafe_reason(ipaddress.ip_address(text), allow_private=allow_private)
        if reason is not None:
            raise UnsafeTarget(host, text, reason)
        addresses.append(text)
    if not addresses:
        raise UnresolvableTarget(f"webhook host {host!r} has no addresses")
    return addresses
