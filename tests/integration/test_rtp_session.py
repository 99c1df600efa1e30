"""Two RtpSessions on loopback: pacing, symmetric latching, DTMF, hold, RTCP, inactivity."""

from __future__ import annotations

import asyncio
import dataclasses

from callfleet.telephony.rtp import RtpSession
from callfleet.telephony.sip.sdp import NegotiatedMedia


def _media(port: int, direction: str = "sendrecv") -> NegotiatedMedia:
    return NegotiatedMedia("127.0.0.1", port, 0, "PCMU", 101, direction)


def test_pacing_latching_dtmf_rtcp_hold_and_inactivity() -> None:
    async def scenario() -> None:
        a = await RtpSession.open(rtcp_interval_s=0.2)
        # a is b's trunk: only the trunk's own address may latch (NAT), so say so
        b = await RtpSession.open(
            rtcp_interval_s=0.2, inactivity_timeout_s=0.4, latch_host="127.0.0.1"
        )
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        b.on_audio = lambda pcm: arrivals.append(loop.time())
        digits: list[str] = []
        b.on_dtmf = digits.append
        try:
            a.apply(_media(b.local_port))
            b.apply(_media(9))  # wrong port in "SDP": b must latch to a's real source
            await asyncio.sleep(1.0)
            sent = a.packets_sent
            assert 47 <= sent <= 52, f"{sent} packets in 1 s (20 ms pacing)"
            assert b.packets_received >= sent - 3
            assert a.packets_received > 40, "b latched to a's address and its RTP reached a"
            assert b.stats.last_sr_at is not None, "b received a's RTCP sender report"
            gaps = [t2 - t1 for t1, t2 in zip(arrivals, arrivals[1:], strict=False)]
            assert abs(sum(gaps) / len(gaps) - 0.020) < 0.002

            a.send_dtmf("7")
            await asyncio.sleep(0.4)
            assert digits == ["7"]

            before = a.packets_sent
            a.apply(dataclasses.replace(_media(b.local_port), remote_direction="sendonly"))
            await asyncio.sleep(0.2)
            assert a.packets_sent - before <= 1, "on hold a sends nothing"
            await asyncio.sleep(0.4)
            assert not b.inactive.is_set(), "a's RTCP keeps the held stream alive"
            await a.close()
            await asyncio.sleep(0.6)
            assert b.inactive.is_set(), "b noticed that the remote went silent"
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
