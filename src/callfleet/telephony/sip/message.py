"""SIP requests and responses: parsing from bytes and serialising to bytes.

`parse_message` accepts anything a socket may hand us and either returns a
validated `SipRequest`/`SipResponse` or raises `SipParseError`: garbage, truncated
datagrams, a wrong Content-Length, missing mandatory headers, oversized header
sections. Every message it returns has a parseable top Via, From, To, Call-ID and
CSeq, so the layers above may use the accessors without further checks. Compact
header names (`v`, `f`, `t`, `i`, `m`, `l`, `c`, `k`, ...) become their long forms,
folded header lines are joined, and serialising always writes an exact
Content-Length.

Serialising refuses (`UnsafeHeaderValue`) a start line, header name or header value
containing CR, LF or NUL, wherever it came from: a tenant's trunk settings, a phone
number or a peer's header echoed back must never put a line of their own on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from callfleet.telephony.sip.errors import SipError, SipParseError
from callfleet.telephony.sip.uri import (
    NameAddr,
    Via,
    parse_name_addr,
    parse_via,
    split_header_list,
)

__all__ = [
    "MAX_HEADER_BYTES",
    "Headers",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "UnsafeHeaderValue",
    "build_response",
    "canonical_name",
    "parse_message",
]

MAX_HEADER_BYTES = 64 * 1024
"""Header sections larger than this are refused (a UDP datagram holds at most ~64 KB)."""

# A table: compact form and long name side by side, several to a line (fmt: skip).
_COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "r": "Refer-To", "b": "Referred-By", "o": "Event", "u": "Allow-Events",
    "x": "Session-Expires",
}  # fmt: skip
# A table of header names, several to a line; one a line would run to 35 lines (fmt: skip).
_KNOWN = [
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length",
    "Content-Type", "Route", "Record-Route", "WWW-Authenticate", "Authorization",
    "Proxy-Authenticate", "Proxy-Authorization", "Allow", "Supported", "Require",
    "Session-Expires", "Min-SE", "Retry-After", "User-Agent", "Server", "Refer-To",
    "Referred-By", "Event", "Subscription-State", "Expires", "Accept", "Unsupported",
    "Reason", "RSeq", "RAck", "P-Asserted-Identity", "Warning",
]  # fmt: skip
_CANONICAL = {name.lower(): name for name in _KNOWN} | _COMPACT
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_LINE_BREAKERS = frozenset("\r\n\0")


class UnsafeHeaderValue(SipError, ValueError):
    """A message to send has CR, LF or NUL in its start line, a header name or a value."""


def _check_line(what: str, text: str) -> None:
    if not _LINE_BREAKERS.isdisjoint(text):
        raise UnsafeHeaderValue(
            f"refused to send a SIP message: its {what} contains CR or LF (or NUL), "
            "which would inject a line of its own; check the trunk's host, from_domain "
            "and credentials"
        )


def canonical_name(name: str) -> str:
    """`v` -> `Via`, `call-id` -> `Call-ID`; unknown names are kept as written."""
    return _CANONICAL.get(name.strip().lower(), name.strip())


class Headers:
    """An ordered, case-insensitive multimap of header lines."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(k), v) for k, v in items]

    def get(self, name: str) -> str | None:
        key = canonical_name(name).lower()
        for k, v in self._items:
            if k.lower() == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [v for k, v in self._items if k.lower() == key]

    def values(self, name: str) -> list[str]:
        """All values of a list header (Via, Route, ...), split on top-level commas."""
        return [part for line in self.get_all(name) for part in split_header_list(line)]

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != key]

    def copy(self) -> Headers:
        return Headers(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _MessageBase:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return _parse_cseq(self.headers.get("CSeq") or "")

    @property
    def from_addr(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to_addr(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def top_via(self) -> Via:
        vias = self.headers.values("Via")
        return parse_via(vias[0] if vias else "")

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _serialise(self, start_line: str) -> bytes:
        _check_line("start line", start_line)
        lines = [start_line]
        for k, v in self.headers:
            if k != "Content-Length":
                _check_line(f"{k} header", f"{k}{v}")
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


@dataclass
class SipRequest(_MessageBase):
    method: str = ""
    uri: str = ""

    def to_bytes(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} SIP/2.0")

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} call-id={self.call_id}>"


@dataclass
class SipResponse(_MessageBase):
    status: int = 0
    reason: str = ""

    def to_bytes(self) -> bytes:
        return self._serialise(f"SIP/2.0 {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} {self.cseq[1]}>"


SipMessage = SipRequest | SipResponse


def build_response(
    request: SipRequest,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    vias: Iterable[str] | None = None,
) -> SipResponse:
    """A response to `request` (RFC 3261 §8.2.6.2): its Via, From, To, Call-ID and CSeq,
    `to_tag` added to a To without one (not on a 100), then `headers`.

    `vias` replaces the request's Via lines (a UAS filling in `received`/`rport`).
    """
    h = Headers()
    for via in request.headers.get_all("Via") if vias is None else vias:
        h.add("Via", via)
    h.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if to_tag and status > 100 and request.to_addr.tag is None:
        to += f";tag={to_tag}"
    h.add("To", to)
    h.add("Call-ID", request.call_id)
    h.add("CSeq", request.headers.get("CSeq") or "")
    for name, value in headers:
        h.add(name, value)
    return SipResponse(headers=h, status=status, reason=reason, body=body)


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
        raise SipParseError(f"bad CSeq {value[:80]!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipParseError("CSeq number out of range")
    return number, parts[1].upper()


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            return data[:idx], data[idx + len(sep) :]
    raise SipParseError("no end of headers (truncated message?)")


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for raw in re.split(r"\r?\n", head):
        if raw[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("continuation line before any header")
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw)
    return lines


def parse_message(data: bytes, *, stream: bool = False) -> SipMessage:
    """Parse one SIP message.

    With `stream=False` (UDP) the datagram must hold the whole message; a
    Content-Length larger than the body is a truncation error, extra bytes are
    ignored. With `stream=True` the caller has already framed exactly one message.
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head_bytes, body = _split_head(data)
    if len(head_bytes) > MAX_HEADER_BYTES:
        raise SipParseError("header section too large")
    head = head_bytes.decode("utf-8", "surrogateescape")
    if "\x00" in head:
        raise SipParseError("NUL byte in headers")
    lines = _unfold(head)
    start = lines[0]
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name.strip()):
            raise SipParseError(f"bad header line {line[:80]!r}")
        headers.add(name, value.strip())
    message = _parse_start_line(start, headers)
    _validate(message)
    length_text = headers.get("Content-Length")
    if length_text is not None:
        if not length_text.isdigit():
            raise SipParseError(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if length > len(body):
            raise SipParseError("Content-Length exceeds the body (truncated message)")
        body = body[:length]
    elif stream:
        body = b""
    message.body = body
    return message


def _parse_start_line(start: str, headers: Headers) -> SipMessage:
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError(f"bad status line {start[:80]!r}")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
        return SipResponse(
            headers=headers, status=status, reason=parts[2] if len(parts) > 2 else ""
        )
    parts = start.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not _TOKEN.match(parts[0]) or not parts[1]:
        raise SipParseError(f"bad request line {start[:80]!r}")
    return SipRequest(headers=headers, method=parts[0].upper(), uri=parts[1])


def _validate(message: SipMessage) -> None:
    for name in _MANDATORY:
        if message.headers.get(name) is None:
            raise SipParseError(f"missing mandatory header {name}")
    if not message.call_id.strip():
        raise SipParseError("empty Call-ID")
    _, method = message.cseq
    if isinstance(message, SipRequest) and method != message.method:
        raise SipParseError("CSeq method does not match the request method")
    # Each accessor raises SipParseError when its header is unreadable.
    for check in (lambda: message.top_via, lambda: message.from_addr, lambda: message.to_addr):
        check()
