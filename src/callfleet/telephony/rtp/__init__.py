"""RTP media for calls: G.711, RFC 4733 DTMF, jitter buffer, paced sending, RTCP."""

from callfleet.telephony.rtp.dtmf import DtmfReceiver, key_press
from callfleet.telephony.rtp.jitter import JitterBuffer
from callfleet.telephony.rtp.packet import RtpPacket, RtpParseError
from callfleet.telephony.rtp.session import AudioSource, PcmSource, RtpSession

__all__ = [
    "AudioSource",
    "DtmfReceiver",
    "JitterBuffer",
    "PcmSource",
    "RtpPacket",
    "RtpParseError",
    "RtpSession",
    "key_press",
]
