"""SDP (RFC 4566) for one audio stream, and the offer/answer rules we need (RFC 3264).

We offer PCMU and PCMA plus `telephone-event/8000` (RFC 4733). `negotiate` reads
the answer (from a 183, a 200 or an in-dialog request) into `NegotiatedMedia`,
the only thing the RTP side needs: where to send, which payload types, and the
direction. `answer_offer` builds our answer to an offer the peer makes in a
re-INVITE or UPDATE, mirroring hold (`sendonly` -> `recvonly`, `inactive`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from callfleet.telephony.sip.errors import SdpError
from callfleet.telephony.sip.message import SipMessage

log = structlog.get_logger(__name__)

__all__ = [
    "negotiate_or_warn",
    "DTMF_PAYLOAD_TYPE",
    "MediaDescription",
    "NegotiatedMedia",
    "SessionDescription",
    "answer_offer",
    "build_offer",
    "negotiate",
    "parse_sdp",
]

DTMF_PAYLOAD_TYPE = 101
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_SUPPORTED = ("PCMU", "PCMA")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MAX_PTIME_MS = 1000
"""Packet times above a second are not telephony; RFC 4566 leaves ptime unbounded."""
_MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[int]
    connection: str | None = None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    ptime: int | None = None
    other: list[str] = field(default_factory=list)

    def codec(self, pt: int) -> tuple[str, int] | None:
        return self.rtpmap.get(pt) or _STATIC.get(pt)


@dataclass
class SessionDescription:
    origin_user: str = "callfleet"
    session_id: int = 0
    session_version: int = 0
    origin_address: str = "0.0.0.0"
    name: str = "-"
    connection: str | None = None
    direction: str | None = None
    media: list[MediaDescription] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        lines = [
            "v=0",
            f"o={self.origin_user} {self.session_id} {self.session_version} "
            f"IN IP4 {self.origin_address}",
            f"s={self.name}",
        ]
        if self.connection:
            lines.append(f"c=IN IP4 {self.connection}")
        lines.append("t=0 0")
        if self.direction:
            lines.append(f"a={self.direction}")
        for m in self.media:
            fmts = " ".join(str(f) for f in m.formats)
            lines.append(f"m={m.media} {m.port} {m.proto} {fmts}")
            if m.connection:
                lines.append(f"c=IN IP4 {m.connection}")
            for pt in m.formats:
                if pt in m.rtpmap:
                    name, rate = m.rtpmap[pt]
                    lines.append(f"a=rtpmap:{pt} {name}/{rate}")
                if pt in m.fmtp:
                    lines.append(f"a=fmtp:{pt} {m.fmtp[pt]}")
            if m.ptime:
                lines.append(f"a=ptime:{m.ptime}")
            if m.direction:
                lines.append(f"a={m.direction}")
        return ("\r\n".join(lines) + "\r\n").encode()


def parse_sdp(body: bytes) -> SessionDescription:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    sdp = SessionDescription()
    current: MediaDescription | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        try:
            if kind == "o":
                user, sid, ver, _net, _atype, addr = value.split()[:6]
                sdp.origin_user, sdp.origin_address = user, addr
                sdp.session_id = _bounded(sid, 0, 2**64 - 1, "o= session id")
                sdp.session_version = _bounded(ver, 0, 2**64 - 1, "o= version")
            elif kind == "c":
                addr = value.split()[2].split("/")[0]
                if current is None:
                    sdp.connection = addr
                else:
                    current.connection = addr
            elif kind == "m":
                media, port, proto, *fmts = value.split()
                current = MediaDescription(
                    media,
                    _bounded(port.split("/")[0], 0, 65535, "m= port"),
                    proto,
                    [int(f) for f in fmts if f.isdigit() and int(f) <= 127],
                )
                sdp.media.append(current)
            elif kind == "a":
                _parse_attribute(sdp, current, value)
        except (ValueError, IndexError, OverflowError) as exc:
            raise SdpError(f"bad SDP line {line[:80]!r}: {exc}") from exc
    return sdp


def _bounded(text: str, low: int, high: int, what: str) -> int:
    """A decimal integer in [low, high]; ValueError (an SdpError above) otherwise."""
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what} out of range {low}..{high}")
    return value


def _parse_attribute(sdp: SessionDescription, m: MediaDescription | None, value: str) -> None:
    name, _, rest = value.partition(":")
    if name in _DIRECTIONS:
        if m is None:
            sdp.direction = name
        else:
            m.direction = name
    elif m is None:
        return
    elif name == "rtpmap":
        pt, enc = rest.split(None, 1)
        codec, rate = enc.split("/")[:2]
        m.rtpmap[_bounded(pt, 0, 127, "payload type")] = (
            codec,
            _bounded(rate, 1, 1_000_000, "clock rate"),
        )
    elif name == "fmtp":
        pt, params = rest.split(None, 1)
        m.fmtp[_bounded(pt, 0, 127, "payload type")] = params
    elif name == "ptime":
        ptime = float(rest)  # "20.0" occurs in the wild; "inf" and "nan" must not pass
        if not 0 < ptime <= _MAX_PTIME_MS:
            raise ValueError(f"ptime out of range 1..{_MAX_PTIME_MS}")
        m.ptime = max(1, int(ptime))
    else:
        m.other.append(value)


@dataclass(frozen=True)
class NegotiatedMedia:
    """The result of offer/answer for the audio stream, from the remote's SDP."""

    remote_host: str
    remote_port: int
    payload_type: int
    codec: str
    dtmf_payload_type: int | None
    remote_direction: str
    """What the remote said it does (`sendonly` means it will not listen to us)."""

    @property
    def we_send(self) -> bool:
        return self.remote_port != 0 and self.remote_direction in ("sendrecv", "recvonly")

    @property
    def we_receive(self) -> bool:
        return self.remote_port != 0 and self.remote_direction in ("sendrecv", "sendonly")


def build_offer(
    host: str, port: int, *, session_id: int, version: int, direction: str = "sendrecv"
) -> SessionDescription:
    media = MediaDescription(
        "audio",
        port,
        "RTP/AVP",
        [0, 8, DTMF_PAYLOAD_TYPE],
        rtpmap={0: ("PCMU", 8000), 8: ("PCMA", 8000), DTMF_PAYLOAD_TYPE: ("telephone-event", 8000)},
        fmtp={DTMF_PAYLOAD_TYPE: "0-16"},
        direction=direction,
        ptime=20,
    )
    return SessionDescription(
        session_id=session_id,
        session_version=version,
        origin_address=host,
        connection=host,
        media=[media],
    )


def _audio(sdp: SessionDescription) -> MediaDescription:
    for m in sdp.media:
        if m.media == "audio":
            return m
    raise SdpError("no audio stream in SDP")


def negotiate(sdp: SessionDescription) -> NegotiatedMedia:
    """Pick the first PCMU/PCMA format of the remote's audio stream."""
    m = _audio(sdp)
    host = m.connection or sdp.connection
    if host is None:
        raise SdpError("SDP has no connection address")
    dtmf: int | None = None
    chosen: tuple[int, str] | None = None
    for pt in m.formats:
        codec = m.codec(pt)
        if codec is None:
            continue
        name = codec[0].upper()
        if name == "TELEPHONE-EVENT" and codec[1] == 8000 and dtmf is None:
            dtmf = pt
        elif name in _SUPPORTED and codec[1] == 8000 and chosen is None:
            chosen = (pt, name)
    if chosen is None:
        raise SdpError("no common codec (we support PCMU and PCMA)")
    direction = m.direction or sdp.direction or "sendrecv"
    if host == "0.0.0.0":  # RFC 2543 hold
        direction = "inactive" if direction in ("recvonly", "inactive") else "sendonly"
    return NegotiatedMedia(host, m.port, chosen[0], chosen[1], dtmf, direction)


def answer_offer(
    offer: SessionDescription, host: str, port: int, *, session_id: int, version: int
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer an in-dialog offer with one codec from it, mirroring its direction."""
    media = negotiate(offer)
    pts = [media.payload_type]
    rtpmap = {media.payload_type: (media.codec, 8000)}
    fmtp: dict[int, str] = {}
    if media.dtmf_payload_type is not None:
        pts.append(media.dtmf_payload_type)
        rtpmap[media.dtmf_payload_type] = ("telephone-event", 8000)
        fmtp[media.dtmf_payload_type] = "0-16"
    answer = MediaDescription(
        "audio",
        port,
        "RTP/AVP",
        pts,
        rtpmap=rtpmap,
        fmtp=fmtp,
        direction=_MIRROR[media.remote_direction],
        ptime=20,
    )
    sdp = SessionDescription(
        session_id=session_id,
        session_version=version,
        origin_address=host,
        connection=host,
        media=[answer],
    )
    return sdp, media


def negotiate_or_warn(message: SipMessage, what: str) -> NegotiatedMedia | None:
    """The media a message's SDP answer agrees on; None without an SDP body, or when
    it is unusable (logged as `what`: a bad answer is ignored, never fatal)."""
    if not message.body or message.content_type != "application/sdp":
        return None
    try:
        return negotiate(parse_sdp(message.body))
    except SdpError as exc:
        log.warning(what, error=str(exc))
        return None
