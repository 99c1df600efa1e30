"""SIP URIs, name-addr values (From/To/Contact/Route) and Via values.

These are the structured pieces inside header values (RFC 3261 §19 and §25). Each
parser raises `SipParseError` on malformed input and never anything else, so the
message layer can validate headers once and the layers above can trust them.
URI parameter names are compared case-insensitively (SIPp sends `transport=UDP`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callfleet.telephony.sip.errors import SipParseError

__all__ = [
    "NameAddr",
    "SipUri",
    "Via",
    "format_params",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_header_list",
]


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes or `<...>`."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    angle = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _split_semicolons(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse `;a=1;b;c="x y"` (leading `;` optional); names are lower-cased."""
    params: dict[str, str | None] = {}
    for part in _split_semicolons(text.strip().lstrip(";")):
        part = part.strip()
        if not part:
            continue
        name, sep, val = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError(f"empty parameter name in {text!r}")
        if not sep:
            params[name] = None
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        params[name] = val
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _split_hostport(text: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError(f"bad host:port {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            return _check_host(host), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port in {text!r}")
    return _check_host(host), int(port_text)


def _check_host(host: str) -> str:
    if not host or any(c in host for c in " \t<>\"'@,;"):
        raise SipParseError(f"bad host {host!r}")
    return host


@dataclass
class SipUri:
    """`sip:user@host:port;params` (also `sips:`); `tel:` is kept as user only."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        return (value or "udp").lower()

    def hostport(self, default_port: int = 5060) -> tuple[str, int]:
        host = self.host.strip("[]")
        return host, self.port or default_port

    def __str__(self) -> str:
        out = f"{self.scheme}:"
        if self.user is not None:
            out += f"{self.user}@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        out += format_params(self.params)
        if self.headers:
            out += f"?{self.headers}"
        return out


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips", "tel"):
        raise SipParseError(f"unsupported URI {text[:80]!r}")
    rest, _, headers = rest.partition("?")
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError("empty tel URI")
        return SipUri(scheme, number, "", None, parse_params(params), headers)
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo if at else None
    hostport, _, params = hostpart.partition(";")
    host, port = _split_hostport(hostport)
    return SipUri(scheme, user, host, port, parse_params(params), headers)


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header params."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        name = f'"{self.display}" ' if self.display else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    text = text.strip()
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <...> in {text[:80]!r}")
        display = text[:lt].strip().strip('"').strip() or None
        uri = parse_uri(text[lt + 1 : gt])
        return NameAddr(uri, display, parse_params(text[gt + 1 :]))
    if text == "*":
        raise SipParseError("wildcard contact is not a name-addr")
    # addr-spec form: parameters after the URI belong to the header, not the URI.
    uri_text, _, params = text.partition(";")
    return NameAddr(parse_uri(uri_text), None, parse_params(params))


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    proto, _, rest = text.strip().partition(" ")
    pieces = [p.strip() for p in proto.split("/")]
    if len(pieces) != 3 or pieces[0].upper() != "SIP" or not pieces[2]:
        raise SipParseError(f"bad Via protocol {text[:80]!r}")
    hostport, _, params = rest.strip().partition(";")
    host, port = _split_hostport(hostport.strip())
    return Via(pieces[2].upper(), host, port, parse_params(params))
