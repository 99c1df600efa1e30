"""What a SIP trunk's host, domain and credentials may look like.

A trunk's `host`, `from_domain` and `username` are written into SIP headers (the
request-URI, From, the digest Authorization) and its host is where the INVITE goes,
so each is checked for syntax when the trunk is added: `host` is a host name or an IP
literal, `from_domain` a host name, and the credentials carry no character that ends
a header line or a quoted string (CR, LF, NUL, other control characters, `"`, `\\`).
Pure: no DNS. Where a host resolves to is judged by the trunk address policy in
`callfleet.net`, at creation and again at every dial.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = [
    "MAX_HOSTNAME_LENGTH",
    "credential_problem",
    "host_problem",
    "hostname_problem",
    "ip_literal",
]

MAX_HOSTNAME_LENGTH: Final = 253
_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN_IN_CREDENTIALS: Final = frozenset('"\\')


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` spells (IPv6 with or without brackets), or None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def hostname_problem(value: str) -> str | None:
    """Why `value` is not a DNS host name (RFC 1123 labels, ASCII), or None if it is one."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > MAX_HOSTNAME_LENGTH:
        return f"Must be a host name of 1 to {MAX_HOSTNAME_LENGTH} characters."
    if not all(_LABEL.match(label) for label in name.split(".")):
        return (
            "Must be a host name such as sip.example.com: letters, digits and hyphens in "
            "dot-separated labels of at most 63 characters, with no port, path, spaces or "
            "line breaks (write an international name in its xn-- form)."
        )
    return None


def host_problem(value: str) -> str | None:
    """Why `value` is neither a host name nor an IP literal, or None if it is one."""
    if ip_literal(value) is not None:
        return None
    problem = hostname_problem(value)
    if problem is None:
        return None
    return problem.replace("Must be a host name", "Must be a host name or an IP address", 1)


def credential_problem(value: str) -> str | None:
    """Why `value` cannot be a SIP digest user name or password, or None if it can.

    It is written into a quoted header parameter (`username="..."`), so a quote or a
    backslash would end or escape it, and a control character (CR, LF, NUL, ...) would
    end the header line.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "Must not contain control characters such as CR, LF or NUL."
    if not _FORBIDDEN_IN_CREDENTIALS.isdisjoint(value):
        return 'Must not contain a double quote (") or a backslash (\\).'
    return None
