"""A real phone: baresip auto-answers, plays a WAV, records what it hears, logs DTMF."""

from __future__ import annotations

import array
import asyncio
import time
from pathlib import Path

from tests.peers import Baresip, best_correlation, chirp, read_wav

from callfleet.telephony.rtp import PcmSource, RtpSession
from callfleet.telephony.sip import SipClient


def _wait_for(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return False


def test_audio_both_ways_and_dtmf_with_baresip(tmp_path: Path) -> None:
    ours = bytes(1600) + chirp(1.5)  # 100 ms of silence, then the chirp
    # A different signal from the phone, padded: baresip hangs up when its file ends.
    backwards = array.array("h", chirp(1.5))
    backwards.reverse()
    theirs = bytes(1600) + backwards.tobytes() + bytes(16000 * 4)

    async def scenario(phone: Baresip) -> tuple[bytes, int, str]:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            rtp.source = PcmSource(ours)
            heard = bytearray()
            rtp.on_audio = heard.extend
            result = await client.invite(
                f"sip:bot@127.0.0.1:{phone.port}", media=rtp, ring_timeout_s=10
            )
            assert result.call is not None, f"{result}\n{phone.log()}"
            await asyncio.sleep(2.0)
            rtp.send_dtmf("5")
            await asyncio.sleep(0.6)
            await result.call.hangup()
            await rtp.close()
            codec = rtp.media.codec if rtp.media else ""
            return bytes(heard), rtp.packets_received, codec

    with Baresip(tmp_path, theirs) as phone:
        heard, received, codec = asyncio.run(scenario(phone))
        assert _wait_for(lambda: "received event: '5'" in phone.log(), 5), phone.log()
        phone.stop()  # flushes its recordings
    assert codec == "PCMU"
    assert received > 100
    recorded = list(phone.recordings("dec"))
    assert recorded, f"baresip recorded nothing\n{phone.log()}"
    pcm, rate = read_wav(recorded[-1])
    assert rate == 8000
    assert best_correlation(ours, pcm) > 0.99, "what baresip heard is what we sent"
    assert best_correlation(theirs, heard) > 0.99, "what we heard is what baresip played"
