"""RTCP (RFC 3550 §6): reception statistics, and compound SR/RR + SDES packets.

`ReceptionStats` keeps the per-source counters of appendix A (extended highest
sequence number, cumulative and fractional loss, interarrival jitter) and turns
them into a report block. `build_report` makes the compound packet we send every
few seconds: an SR while we are sending, else an RR, always followed by SDES CNAME.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

__all__ = ["ReceptionStats", "RtcpPacket", "build_report", "ntp_timestamp", "parse_rtcp"]

SR, RR, SDES, BYE = 200, 201, 202, 203
_NTP_EPOCH_OFFSET = 2208988800


def ntp_timestamp(unix_time: float | None = None) -> tuple[int, int]:
    now = time.time() if unix_time is None else unix_time
    seconds = int(now) + _NTP_EPOCH_OFFSET
    fraction = int((now % 1.0) * (1 << 32)) & 0xFFFFFFFF
    return seconds & 0xFFFFFFFF, fraction


class ReceptionStats:
    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.last_sr: int = 0
        self.last_sr_at: float | None = None
        self._reset(None, 0)

    def _reset(self, ssrc: int | None, sequence: int) -> None:
        self.ssrc = ssrc
        self.received = 0
        self.jitter = 0.0
        self._cycles = 0
        self._transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self._base = self._max = sequence

    def update(self, ssrc: int, sequence: int, timestamp: int, arrival_s: float) -> None:
        if self.ssrc != ssrc:
            self._reset(ssrc, sequence)
        else:
            delta = (sequence - self._max) & 0xFFFF
            if 0 < delta < 0x8000:
                if sequence < self._max:
                    self._cycles += 1 << 16
                self._max = sequence
        self.received += 1
        transit = arrival_s * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit

    @property
    def extended_max(self) -> int:
        return self._cycles + self._max

    @property
    def cumulative_lost(self) -> int:
        expected = self.extended_max - self._base + 1
        return max(0, expected - self.received) if self.ssrc is not None else 0

    def report_block(self, now_s: float) -> bytes:
        expected = self.extended_max - self._base + 1
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 else 0
        fraction = max(0, min(fraction, 255))
        lost = min(self.cumulative_lost, 0x7FFFFF)
        dlsr = 0
        if self.last_sr_at is not None:
            dlsr = int((now_s - self.last_sr_at) * 65536) & 0xFFFFFFFF
        return struct.pack(
            "!IIIIII",
            self.ssrc or 0,
            (fraction << 24) | lost,
            self.extended_max & 0xFFFFFFFF,
            int(self.jitter) & 0xFFFFFFFF,
            self.last_sr,
            dlsr,
        )


def _header(pt: int, count: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0x80 | count, pt, (len(body) + 4) // 4 - 1) + body


def build_report(
    ssrc: int,
    cname: str,
    *,
    stats: ReceptionStats | None,
    sender: tuple[int, int, int] | None,
    now_s: float,
) -> bytes:
    """A compound RTCP packet; `sender` = (rtp timestamp, packets, octets) makes it an SR."""
    blocks = b""
    count = 0
    if stats is not None and stats.ssrc is not None:
        blocks, count = stats.report_block(now_s), 1
    if sender is not None:
        msw, lsw = ntp_timestamp()
        info = struct.pack("!IIIIII", ssrc, msw, lsw, *(v & 0xFFFFFFFF for v in sender))
        report = _header(SR, count, info + blocks)
    else:
        report = _header(RR, count, struct.pack("!I", ssrc) + blocks)
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return report + _header(SDES, 1, chunk)


@dataclass
class RtcpPacket:
    packet_type: int
    ssrc: int
    ntp_middle: int | None = None
    """The middle 32 bits of an SR's NTP timestamp (for the next report's LSR)."""
    blocks: list[tuple[int, int, int]] = field(default_factory=list)
    """(ssrc, fraction lost, cumulative lost) for each report block."""


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound packet; raises ValueError when it is not RTCP."""
    packets: list[RtcpPacket] = []
    offset = 0
    while offset + 8 <= len(data):
        first, pt, length = struct.unpack_from("!BBH", data, offset)
        end = offset + 4 * (length + 1)
        if first >> 6 != 2 or end > len(data) or not 192 <= pt <= 223:
            raise ValueError("not an RTCP packet")
        (ssrc,) = struct.unpack_from("!I", data, offset + 4)
        packet = RtcpPacket(pt, ssrc)
        blocks_at = offset + 8
        if pt == SR and end >= offset + 28:
            msw, lsw = struct.unpack_from("!II", data, offset + 8)
            packet.ntp_middle = ((msw & 0xFFFF) << 16) | (lsw >> 16)
            blocks_at = offset + 28
        if pt in (SR, RR):
            for i in range(first & 0x1F):
                at = blocks_at + 24 * i
                if at + 24 > end:
                    break
                src, lost = struct.unpack_from("!II", data, at)
                packet.blocks.append((src, lost >> 24, lost & 0xFFFFFF))
        packets.append(packet)
        offset = end
    if not packets:
        raise ValueError("empty RTCP packet")
    return packets
