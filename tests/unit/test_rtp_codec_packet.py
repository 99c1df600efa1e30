"""G.711 tables, RTP packets, RFC 4733 events, the jitter buffer and RTCP reports."""

from __future__ import annotations

import array
import math
import struct

import pytest

from callfleet.telephony.rtp import g711
from callfleet.telephony.rtp.dtmf import DtmfEvent, DtmfReceiver, key_press
from callfleet.telephony.rtp.jitter import JitterBuffer
from callfleet.telephony.rtp.packet import RtpPacket, RtpParseError
from callfleet.telephony.rtp.rtcp import ReceptionStats, build_report, parse_rtcp


def test_g711_reference_values() -> None:
    assert g711.ulaw_decode_sample(0xFF) == 0
    assert g711.ulaw_decode_sample(0x00) == -32124
    assert g711.ulaw_decode_sample(0x80) == 32124
    assert g711.ulaw_encode_sample(0) == 0xFF
    assert g711.alaw_decode_sample(0xD5) == 8
    assert g711.alaw_decode_sample(0x55) == -8
    assert g711.alaw_encode_sample(0) == 0xD5
    assert g711.silence("PCMU", 2) == b"\xff\xff"


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_round_trip_is_exact_on_codes_and_close_on_audio(codec: str) -> None:
    # µ-law has two zeros (0x7F and 0xFF); every other code survives a round trip.
    codes = bytes(c for c in range(256) if not (codec == "PCMU" and c == 0x7F))
    assert g711.encode(codec, g711.decode(codec, codes)) == codes
    tone = array.array("h", (int(10000 * math.sin(i / 7)) for i in range(1600))).tobytes()
    back = array.array("h")
    back.frombytes(g711.decode(codec, g711.encode(codec, tone)))
    orig = array.array("h")
    orig.frombytes(tone)
    num = sum(a * b for a, b in zip(orig, back, strict=True))
    den = math.sqrt(sum(a * a for a in orig) * sum(b * b for b in back))
    assert num / den > 0.999
    with pytest.raises(ValueError):
        g711.encode("G729", tone)


def test_rtp_packet_round_trip_and_errors() -> None:
    packet = RtpPacket(0, 65535, 2**32 - 1, 0xDEADBEEF, b"\xff" * 160, marker=True, csrcs=(7,))
    parsed = RtpPacket.parse(packet.to_bytes())
    assert parsed == packet
    ext = bytearray(RtpPacket(8, 1, 2, 3, b"ab").to_bytes())
    ext[0] |= 0x10
    ext[12:12] = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
    assert RtpPacket.parse(bytes(ext)).payload == b"ab"
    padded = bytearray(RtpPacket(8, 1, 2, 3, b"ab").to_bytes() + b"\x00\x00\x03")
    padded[0] |= 0x20
    assert RtpPacket.parse(bytes(padded)).payload == b"ab"
    for bad in (b"", b"\x00" * 12, b"\x80\x00"):
        with pytest.raises(RtpParseError):
            RtpPacket.parse(bad)


def test_key_press_and_receiver_dedupe() -> None:
    events = key_press("5", 100)
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events][-3:] == [True, True, True]
    receiver = DtmfReceiver()
    digits = [receiver.feed(1000, e.to_bytes()) for e in events]
    assert [d for d in digits if d] == ["5"]
    # Lost end packets: the next event's start reports the previous digit.
    assert receiver.feed(5000, DtmfEvent(11, False, 10, 160).to_bytes()) is None
    assert receiver.feed(9000, DtmfEvent(1, False, 10, 160).to_bytes()) == "#"
    assert receiver.feed(9000, b"\x01") is None
    with pytest.raises(ValueError):
        key_press("x")


def test_jitter_buffer_reorders_conceals_and_drops_late() -> None:
    jb = JitterBuffer(depth=3)
    for seq in (65534, 0, 65535):  # reordered across the wrap
        jb.push(seq, bytes([seq & 0xFF]))
    assert [jb.pop(), jb.pop(), jb.pop()] == [b"\xfe", b"\xff", b"\x00"]
    jb.push(2, b"\x02")
    jb.push(3, b"\x03")
    jb.push(4, b"\x04")
    assert jb.pop() is None and jb.lost == 1  # seq 1 never came
    assert jb.pop() == b"\x02"
    jb.push(1, b"\x01")
    assert jb.late == 1
    assert (jb.pop(), jb.pop(), jb.pop()) == (b"\x03", b"\x04", None)


def test_rtcp_report_round_trip() -> None:
    stats = ReceptionStats()
    for i, seq in enumerate([10, 11, 13, 14]):  # 12 lost
        stats.update(0x1234, seq, 160 * seq, i * 0.02)
    assert stats.cumulative_lost == 1 and stats.extended_max == 14
    report = build_report(0xABCD, "me@host", stats=stats, sender=(1, 2, 3), now_s=1.0)
    packets = parse_rtcp(report)
    assert [p.packet_type for p in packets] == [200, 202]
    assert packets[0].ssrc == 0xABCD and packets[0].ntp_middle is not None
    assert packets[0].blocks == [(0x1234, 256 // 5, 1)]  # 1 of 5 lost
    rr = parse_rtcp(build_report(1, "x", stats=None, sender=None, now_s=0))
    assert rr[0].packet_type == 201 and rr[0].blocks == []
    with pytest.raises(ValueError):
        parse_rtcp(b"\x00" * 8)
