"""RTP packets (RFC 3550 §5.1): the fixed header, CSRCs, header extension, padding."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["RtpPacket", "RtpParseError"]

_HEADER = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    """Bytes that are not an RTP version 2 packet."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        first = 0x80 | len(self.csrcs)
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        head = _HEADER.pack(
            first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        csrcs = b"".join(struct.pack("!I", c) for c in self.csrcs)
        return head + csrcs + self.payload

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < _HEADER.size:
            raise RtpParseError("shorter than an RTP header")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise RtpParseError("not RTP version 2")
        offset = _HEADER.size + 4 * (first & 0x0F)
        csrcs = (
            struct.unpack_from(f"!{first & 0x0F}I", data, _HEADER.size)
            if offset <= len(data)
            else ()
        )
        if first & 0x10:  # header extension: skip it
            if len(data) < offset + 4:
                raise RtpParseError("truncated header extension")
            (words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * words
        end = len(data)
        if first & 0x20:  # padding: the last byte counts the padding bytes
            end -= data[-1]
        if offset > end:
            raise RtpParseError("truncated RTP packet")
        return cls(
            payload_type=second & 0x7F,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
        )
