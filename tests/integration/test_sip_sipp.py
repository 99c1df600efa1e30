"""Our SIP client against SIPp on loopback: SIPp's exit code 0 means it saw a correct dialog."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from tests.peers import Sipp, best_correlation, chirp

from callfleet.telephony.rtp import PcmSource, RtpSession
from callfleet.telephony.sip import Credentials, EndReason, InviteResult, SipClient, SipClientConfig

UAS_WAIT_S = 15.0


def _uri(sipp: Sipp) -> str:
    return f"sip:bot@127.0.0.1:{sipp.port}"


def _check(sipp: Sipp) -> None:
    rc = sipp.wait(UAS_WAIT_S)
    assert rc == 0, f"SIPp exit code {rc}\n{sipp.log()}"


def test_basic_call_with_echoed_audio(tmp_path: Path) -> None:
    sent = chirp(1.0)

    async def scenario() -> tuple[InviteResult, bytes, int]:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            rtp.source = PcmSource(sent)
            heard = bytearray()
            rtp.on_audio = heard.extend
            result = await client.invite(_uri(sipp), media=rtp, ring_timeout_s=10)
            assert result.call is not None, result
            await asyncio.sleep(1.6)
            await result.call.hangup()
            await rtp.close()
            return result, bytes(heard), rtp.packets_received

    with Sipp(tmp_path, "answer.xml", extra=["-rtp_echo"]) as sipp:
        result, heard, received = asyncio.run(scenario())
        _check(sipp)
    assert result.status == 200
    assert received >= 60
    assert best_correlation(sent, heard) > 0.99


def test_call_setup_time_median(tmp_path: Path) -> None:
    calls = 10

    async def scenario() -> list[float]:
        setups: list[float] = []
        async with SipClient() as client:
            for _ in range(calls):
                rtp = await RtpSession.open()
                start = time.perf_counter()
                result = await client.invite(_uri(sipp), media=rtp, ring_timeout_s=10)
                setups.append(time.perf_counter() - start)
                assert result.call is not None, result
                await result.call.hangup()
                await rtp.close()
        return setups

    with Sipp(tmp_path, "answer.xml", calls=calls, extra=["-l", "10"]) as sipp:
        setups = asyncio.run(scenario())
        _check(sipp)
    median_ms = statistics.median(setups) * 1000
    print(f"call set-up median {median_ms:.2f} ms over {calls} calls (max {max(setups) * 1e3:.2f})")
    assert median_ms < 100


def test_basic_call_over_tcp(tmp_path: Path) -> None:
    async def scenario() -> InviteResult:
        config = SipClientConfig(transport="tcp")
        async with SipClient(config) as client:
            rtp = await RtpSession.open()
            uri = _uri(sipp) + ";transport=tcp"
            result = await client.invite(uri, media=rtp, ring_timeout_s=10)
            assert result.call is not None, result
            await asyncio.sleep(0.2)
            await result.call.hangup()
            await rtp.close()
            # SIPp fails a call whose TCP connection closes before its scenario ends.
            rc = await asyncio.to_thread(sipp.wait, UAS_WAIT_S)
            assert rc == 0, f"SIPp exit code {rc}\n{sipp.log()}"
            return result

    with Sipp(tmp_path, "answer.xml", transport="t1") as sipp:
        result = asyncio.run(scenario())
    assert result.status == 200


def test_auth_then_early_media_with_dtmf_before_answer(tmp_path: Path) -> None:
    async def scenario() -> tuple[InviteResult, list[tuple[str, float]], float]:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            digits: list[tuple[str, float]] = []
            rtp.on_dtmf = lambda d: digits.append((d, time.monotonic()))
            result = await client.invite(
                _uri(sipp),
                media=rtp,
                ring_timeout_s=10,
                credentials=Credentials("alice", "s3cret"),
            )
            answered = time.monotonic()
            assert result.call is not None, result
            await asyncio.sleep(0.3)
            await result.call.hangup()
            await rtp.close()
            return result, digits, answered

    with Sipp(tmp_path, "auth_early_dtmf.xml", pcaps=("dtmf_2833_1.pcap",)) as sipp:
        result, digits, answered = asyncio.run(scenario())
        _check(sipp)
    assert result.status == 200
    assert result.early_media
    assert [d for d, _ in digits] == ["1"]
    assert digits[0][1] < answered, "the digit came as early media, before the 200"


def _failing_call(tmp_path: Path, scenario_file: str, ring_timeout_s: float = 10) -> InviteResult:
    async def scenario() -> InviteResult:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            try:
                return await client.invite(_uri(sipp), media=rtp, ring_timeout_s=ring_timeout_s)
            finally:
                await asyncio.sleep(0.2)  # let the transaction absorb retransmissions
                await rtp.close()

    with Sipp(tmp_path, scenario_file) as sipp:
        result = asyncio.run(scenario())
        _check(sipp)
    return result


def test_busy_is_acked(tmp_path: Path) -> None:
    result = _failing_call(tmp_path, "busy.xml")
    assert (result.status, result.call) == (486, None)


def test_503_retry_after(tmp_path: Path) -> None:
    result = _failing_call(tmp_path, "unavailable_retry_after.xml")
    assert result.status == 503
    assert result.retry_after_s == 120


def test_ring_timeout_cancels_and_acks_487(tmp_path: Path) -> None:
    result = _failing_call(tmp_path, "ring_cancel.xml", ring_timeout_s=1.0)
    assert result.status == 487
    assert result.cancelled_by == "ring-timeout"


def test_hangup_event_while_ringing_cancels(tmp_path: Path) -> None:
    async def scenario() -> InviteResult:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            hangup = asyncio.Event()
            ringing = asyncio.Event()

            async def on_ringing() -> None:
                ringing.set()
                asyncio.get_running_loop().call_later(0.3, hangup.set)

            result = await client.invite(
                _uri(sipp), media=rtp, ring_timeout_s=10, hangup=hangup, on_ringing=on_ringing
            )
            await asyncio.sleep(0.2)
            await rtp.close()
            assert ringing.is_set()
            return result

    with Sipp(tmp_path, "ring_cancel.xml") as sipp:
        result = asyncio.run(scenario())
        _check(sipp)
    assert (result.status, result.cancelled_by) == (487, "hangup")


def test_session_refresh_then_hold_then_remote_bye(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, int, str | None]:
        config = SipClientConfig(session_expires_s=90)
        async with SipClient(config) as client:
            rtp = await RtpSession.open()
            result = await client.invite(_uri(sipp), media=rtp, ring_timeout_s=10)
            call = result.call
            assert call is not None, result
            async with asyncio.timeout(10):
                reason = await call.wait_ended()
            await rtp.close()
            direction = rtp.media.remote_direction if rtp.media else None
            return reason, call.refreshes, direction

    with Sipp(tmp_path, "session_timer_hold.xml") as sipp:
        reason, refreshes, direction = asyncio.run(scenario())
        _check(sipp)
    assert reason == EndReason.REMOTE_BYE
    assert refreshes == 1
    assert direction == "sendonly", "the peer's hold reached the RTP session"


def test_forked_answers_release_the_extra_dialog(tmp_path: Path) -> None:
    async def scenario() -> InviteResult:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            result = await client.invite(_uri(sipp), media=rtp, ring_timeout_s=10)
            assert result.call is not None, result
            await asyncio.sleep(0.5)
            await result.call.hangup()
            await rtp.close()
            return result

    with Sipp(tmp_path, "forked_answer.xml") as sipp:
        result = asyncio.run(scenario())
        _check(sipp)
    assert result.call is not None and "first" in result.call.dialog.remote_tag


def test_lost_invite_is_recovered_by_retransmission(tmp_path: Path) -> None:
    sipp = Sipp(tmp_path, "answer.xml")

    async def scenario() -> InviteResult:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            loop = asyncio.get_running_loop()
            loop.call_later(0.8, sipp.start)  # the first INVITE and its 0.5 s copy are lost
            result = await client.invite(_uri(sipp), media=rtp, ring_timeout_s=10)
            assert result.call is not None, result
            await result.call.hangup()
            await rtp.close()
            return result

    try:
        result = asyncio.run(scenario())
        _check(sipp)
    finally:
        sipp.stop()
    assert result.setup_time_s is not None and result.setup_time_s > 1.0
