"""The process-wide count of RTP and RTCP packets every `RtpSession` dropped, by reason.

Reasons: `unexpected_source` (RTP from an address that is neither the SDP's nor,
for NAT, the trunk's), `rtcp_unexpected_source` (RTCP not from the media peer),
`malformed` (not RTP/RTCP), `payload_type` (not a negotiated payload type),
`before_answer` (nothing negotiated yet).
"""

from __future__ import annotations

from callfleet.telephony.sip.drops import DropCounter

__all__ = ["RTP_DROPS"]

RTP_DROPS = DropCounter()
