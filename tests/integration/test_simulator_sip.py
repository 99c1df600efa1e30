"""The phone simulator as a SIP trunk: dialled by our SipCarrier, and by SIPp as a real UAC.

Each behaviour of the phone book must come back as the right carrier `Outcome`;
the voicemail box must play a greeting and a 1 kHz beep and record what the caller
says after it; the simulator's own INVITE record must count exactly the INVITEs
that were sent. SIPp's exit code 0 means a real peer saw a correct UAS.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.peers import Peer, best_correlation, chirp, free_port_block, free_udp_port, read_wav

from callfleet import synth as audio
from callfleet.simulator.sip_server import (
    PhoneSimulator,
    SimulatedCall,
    SimulatorConfig,
    SipSimulatorCarrier,
)
from callfleet.telephony.carrier import DialRequest, DialResult, EndedBy, Outcome, TrunkTarget
from callfleet.telephony.rtp import PcmSource, RtpSession
from callfleet.telephony.sip import SipClient
from callfleet.telephony.sip_carrier import SipCarrier

SCALE = 0.05
HUMAN = "+12125550100"  # Dana: rings 6 s, talks 20 s: 0.3 s and 1.0 s at SCALE
VOICEMAIL = "+12125550140"  # rings 24 s (1.2 s at SCALE); a spoken greeting of ~4.7 s
BUSY = "+12125550160"
NO_ANSWER = "+12125550170"
DECLINE = "+12125550180"  # rings 6 s
UNREACHABLE = "+12125550190"
UNKNOWN = "+12125559999"


class RecordingEvents:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def ringing(self) -> None:
        self.seen.append("ringing")

    async def answered(self) -> None:
        self.seen.append("answered")


@dataclass
class Dialled:
    result: DialResult
    events: list[str]
    call: SimulatedCall | None


async def _dial(
    sim: PhoneSimulator,
    carrier: SipCarrier,
    number: str,
    trunk: TrunkTarget | None = None,
    **fields: object,
) -> Dialled:
    events = RecordingEvents()
    request = DialRequest(
        call_id="c1",
        attempt=1,
        to_number=number,
        from_number="+15550199",
        trunk=trunk or sim.trunk(),
        **fields,  # type: ignore[arg-type]
    )
    result = await carrier.place_call(request, events)
    await sim.wait_idle(5.0)
    calls = [c for c in sim.calls.values() if c.number == number]
    return Dialled(result, events.seen, calls[-1] if calls else None)


def _dial_one(config: SimulatorConfig, number: str, **fields: Any) -> Dialled:
    async def main() -> Dialled:
        carrier = SipCarrier()
        try:
            async with PhoneSimulator(config) as sim:
                dialled = await _dial(sim, carrier, number, **fields)
                assert sim.calls_by_number() == {number: [c.call_id for c in sim.calls.values()]}
                assert not any(r.is_retransmission for r in sim.invites)
                return dialled
        finally:
            await carrier.close()

    return asyncio.run(main())


def test_a_person_answers_talks_and_hangs_up() -> None:
    dialled = _dial_one(SimulatorConfig(time_scale=SCALE), HUMAN)
    result, call = dialled.result, dialled.call
    assert (result.outcome, result.sip_code, result.ended_by) == (
        Outcome.COMPLETED,
        200,
        EndedBy.USER,
    )
    assert dialled.events == ["ringing", "answered"]
    assert result.answered_at is not None and result.ended_at is not None
    # talk_s is 1 s at SCALE, but a person finishes its greeting (0.3 s + ~1.4 s) and
    # gives the caller 4 s to answer before hanging up on a caller who says nothing
    assert 5.2 <= (result.ended_at - result.answered_at).total_seconds() < 7.5
    assert call is not None
    assert (call.responses, call.requests, call.ended_by) == ([100, 180, 200], ["ACK"], "simulator")
    assert (call.said, call.latencies_ms) == (["Hello, this is Dana."], [])
    assert call.packets_sent >= 40 and call.packets_received >= 40  # RTP both ways


@pytest.mark.parametrize(
    ("number", "fields", "outcome", "code", "events", "responses", "requests", "ended_by"),
    [
        (BUSY, {}, Outcome.BUSY, 486, [], [100, 486], ["ACK"], "simulator"),
        (
            NO_ANSWER,
            {"ring_timeout_s": 0.5},
            Outcome.NO_ANSWER,
            487,
            ["ringing"],
            [100, 180, 487],
            ["CANCEL", "ACK"],
            "caller",
        ),
        (DECLINE, {}, Outcome.DECLINED, 603, ["ringing"], [100, 180, 603], ["ACK"], "simulator"),
        (UNREACHABLE, {}, Outcome.FAILED, 502, [], [100, 502], ["ACK"], "simulator"),
        (UNKNOWN, {}, Outcome.FAILED, 404, [], [404], ["ACK"], "simulator"),
    ],
)
def test_unanswered_outcomes(
    number: str,
    fields: dict[str, object],
    outcome: Outcome,
    code: int,
    events: list[str],
    responses: list[int],
    requests: list[str],
    ended_by: str,
) -> None:
    dialled = _dial_one(SimulatorConfig(time_scale=SCALE), number, **fields)
    assert (dialled.result.outcome, dialled.result.sip_code) == (outcome, code)
    assert dialled.events == events
    call = dialled.call
    assert call is not None
    assert (call.responses, call.requests, call.ended_by) == (responses, requests, ended_by)
    if number == UNREACHABLE:
        assert call.final_response is not None
        assert call.final_response.headers.get("Retry-After") is None
    if number == UNKNOWN:
        assert "invalid number" in (dialled.result.error_message or "")


def test_voicemail_answers_through_the_carrier() -> None:
    dialled = _dial_one(SimulatorConfig(time_scale=SCALE), VOICEMAIL, max_duration_s=7.0)
    result, call = dialled.result, dialled.call
    assert (result.outcome, result.ended_by) == (Outcome.COMPLETED, EndedBy.ASSISTANT)
    assert call is not None and call.beep_at is not None
    assert call.ended_by == "caller"
    assert len(call.heard) > 0.3 * 16000  # the carrier's silence after the beep, recorded


def test_voicemail_greeting_beep_and_recorded_message(tmp_path: Path) -> None:
    message = chirp(1.0)

    async def main() -> tuple[SimulatedCall, list[bytes], int]:
        config = SimulatorConfig(time_scale=SCALE, record_dir=tmp_path)
        async with PhoneSimulator(config) as sim, SipClient() as client:
            host, port = sim.address
            rtp = await RtpSession.open()
            heard: list[bytes] = []
            beep_over = asyncio.Event()
            beep_frames = 0

            def on_audio(frame: bytes) -> None:
                nonlocal beep_frames
                heard.append(frame)
                if _is_beep(frame):
                    beep_frames += 1
                elif beep_frames >= 10:
                    beep_over.set()
                else:
                    beep_frames = 0

            rtp.on_audio = on_audio
            try:
                result = await client.invite(
                    f"sip:{VOICEMAIL}@{host}:{port}", media=rtp, ring_timeout_s=5
                )
                assert result.call is not None, result
                async with asyncio.timeout(10):  # the spoken greeting is not time-scaled
                    await beep_over.wait()
                rtp.source = PcmSource(message)  # leave a message after the tone
                await asyncio.sleep(1.3)
                await result.call.hangup()
            finally:
                await rtp.close()
            await sim.wait_idle(2.0)
            return sim.calls[result.call.dialog.call_id], heard, beep_frames

    call, heard, beep_frames = asyncio.run(main())
    assert 12 <= beep_frames <= 30  # 0.5 s of 1 kHz (25 frames; a stalled loop skips some)
    first_beep = next(i for i, f in enumerate(heard) if _is_beep(f))
    greeting = heard[:first_beep]
    assert sum(audio.rms(f) > 0.02 for f in greeting) >= 100  # ~4.7 s of spoken greeting
    assert call.ended_by == "caller" and call.requests == ["ACK", "BYE"]
    assert call.recording_from is not None and call.said == []
    assert best_correlation(message, bytes(call.heard)) > 0.95
    assert call.recording_path is not None and call.recording_path.parent == tmp_path
    pcm, rate = read_wav(call.recording_path)
    assert (pcm, rate) == (bytes(call.heard), 8000)


def _is_beep(frame: bytes) -> bool:
    return audio.rms(frame) > 0.05 and audio.tone_purity(frame, 1000.0) > 0.9


def test_fast_mode_answers_at_once_and_hangs_up() -> None:
    async def main() -> list[Dialled]:
        carrier = SipCarrier()
        try:
            async with PhoneSimulator(SimulatorConfig(time_scale=0)) as sim:
                numbers = [f"+1212555{i:04d}" for i in range(100, 130)] + [BUSY]
                dialled = await asyncio.gather(*(_dial(sim, carrier, n) for n in numbers))
                assert sim.max_concurrent_seen >= 10
                by_number = sim.calls_by_number()
                assert sorted(by_number) == sorted(numbers)
                assert all(len(ids) == 1 for ids in by_number.values())
                assert len(sim.invites) == len(numbers)
                return list(dialled)
        finally:
            await carrier.close()

    dialled = asyncio.run(main())
    for d in dialled[:-1]:
        result = d.result
        assert (result.outcome, result.ended_by) == (Outcome.COMPLETED, EndedBy.USER), result
        assert result.answered_at is not None and result.ended_at is not None
        assert (result.ended_at - result.answered_at).total_seconds() < 1.5
        assert d.call is not None and d.call.responses == [100, 200]
    assert dialled[-1].result.outcome is Outcome.BUSY


def test_digest_challenge() -> None:
    config = SimulatorConfig(time_scale=0, username="alice", password="s3cret")

    async def main() -> None:
        carrier = SipCarrier()
        try:
            async with PhoneSimulator(config) as sim:
                host, port = sim.address
                good = await _dial(sim, carrier, HUMAN)
                assert good.result.outcome is Outcome.COMPLETED, good.result
                first, second = sim.invites
                assert (first.call_id, first.cseq, first.challenged) == (
                    second.call_id,
                    1,
                    True,
                )
                assert (second.cseq, second.challenged) == (2, False)
                assert sim.calls_by_number() == {HUMAN: [first.call_id]}

                wrong = TrunkTarget(host, port, username="alice", password="nope")
                bad = await _dial(sim, carrier, BUSY, trunk=wrong)
                anonymous = await _dial(sim, carrier, BUSY, trunk=TrunkTarget(host, port))
                for refused in (bad, anonymous):
                    assert (refused.result.outcome, refused.result.sip_code) == (
                        Outcome.FAILED,
                        407,
                    )
                    assert "authentication" in (refused.result.error_message or "")
                assert len(sim.calls) == 1  # nothing rang without valid credentials
                assert [r.challenged for r in sim.invites[2:]] == [True, True, True]
        finally:
            await carrier.close()

    asyncio.run(main())


def test_capacity_limit_answers_503_with_retry_after() -> None:
    config = SimulatorConfig(time_scale=0, max_concurrent=2, fast_hold_s=0.5)

    async def main() -> list[DialResult]:
        carrier = SipCarrier()
        try:
            async with PhoneSimulator(config) as sim:
                numbers = [f"+1212555{i:04d}" for i in range(100, 105)]
                dialled = await asyncio.gather(*(_dial(sim, carrier, n) for n in numbers))
                assert sim.max_concurrent_seen == 2
                assert sim.rejected_over_capacity == 3
                assert len(sim.calls) == 2
                return [d.result for d in dialled]
        finally:
            await carrier.close()

    results = asyncio.run(main())
    outcomes = sorted((r.outcome, r.sip_code, r.retry_after_s) for r in results)
    assert outcomes == [(Outcome.COMPLETED, 200, None)] * 2 + [(Outcome.FAILED, 503, 1.0)] * 3


def test_over_tcp() -> None:
    dialled = _dial_one(SimulatorConfig(time_scale=0, transport="tcp"), HUMAN)
    assert (dialled.result.outcome, dialled.result.ended_by) == (Outcome.COMPLETED, EndedBy.USER)
    assert dialled.call is not None and dialled.call.requests == ["ACK"]


def test_carrier_adapter_for_calls_without_a_trunk() -> None:
    async def main() -> tuple[DialResult, DialResult, int]:
        carrier = SipSimulatorCarrier(SimulatorConfig(time_scale=0))
        try:
            human, busy = await asyncio.gather(
                *(
                    carrier.place_call(
                        DialRequest(call_id=n, attempt=1, to_number=n, from_number=None),
                        RecordingEvents(),
                    )
                    for n in (HUMAN, BUSY)
                )
            )
            return human, busy, len(carrier.simulator.calls)
        finally:
            await carrier.close()

    human, busy, calls = asyncio.run(main())
    assert (human.outcome, human.ended_by, busy.outcome, calls) == (
        Outcome.COMPLETED,
        EndedBy.USER,
        Outcome.BUSY,
        2,
    )


# -- SIPp as the caller ----------------------------------------------------------------

_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
  ]]></send>
  <recv response="100" optional="true"/>
"""
_ACK = """  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
"""
_ACK_2XX = _ACK.replace(
    "[last_Via:]", "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
)
# XML scenarios spliced with shared pieces: the formatter would break them between the
# pieces and the XML lines they join (fmt: skip).
SCENARIOS = {
    # The phone hangs up: we must get its BYE after the 2xx/ACK, and answer it.
    "remote_bye": _HEAD + """  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
""" + _ACK_2XX + """  <recv request="BYE" timeout="9000"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <timewait milliseconds="300"/>
</scenario>
""",
    # Rings out: we CANCEL, get 200 for it and 487 for the INVITE, and ACK that.
    "cancel": _HEAD + """  <recv response="180"/>
  <send><![CDATA[
      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
  <recv response="487"/>
""" + _ACK + """  <timewait milliseconds="300"/>
</scenario>
""",
    # Busy: 486, which we ACK; the phone must stop retransmitting it.
    "busy": _HEAD + """  <recv response="486"/>
""" + _ACK + """  <timewait milliseconds="300"/>
</scenario>
""",
}  # fmt: skip


class SippUac(Peer):
    def __init__(self, tmp: Path, target: tuple[str, int], number: str, scenario: str) -> None:
        if scenario == "uac":
            chosen = ["-sn", "uac", "-d", "400"]
        else:
            (tmp / f"{scenario}.xml").write_text(SCENARIOS[scenario])
            chosen = ["-sf", f"{scenario}.xml"]
        # sipp's flags stay beside their values (fmt: skip).
        argv = [
            "sipp", f"{target[0]}:{target[1]}", *chosen, "-s", number, "-i", "127.0.0.1",
            "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_port_block(4)),
            "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error", "-trace_err",
            "-trace_msg", "-message_file", "msgs.log",
        ]  # fmt: skip
        super().__init__(argv, tmp, "sipp.out")


@pytest.mark.parametrize(
    ("scenario", "number", "final", "requests", "ended_by"),
    [
        ("uac", HUMAN, 200, ["ACK", "BYE"], "caller"),
        ("remote_bye", HUMAN, 200, ["ACK"], "simulator"),
        ("cancel", NO_ANSWER, 487, ["CANCEL", "ACK"], "caller"),
        ("busy", BUSY, 486, ["ACK"], "simulator"),
    ],
)
def test_sipp_as_the_caller(
    tmp_path: Path, scenario: str, number: str, final: int, requests: list[str], ended_by: str
) -> None:
    async def main() -> SimulatedCall:
        async with PhoneSimulator(SimulatorConfig(time_scale=SCALE)) as sim:
            with SippUac(tmp_path, sim.address, number, scenario) as sipp:
                loop = asyncio.get_running_loop()
                rc = await loop.run_in_executor(None, sipp.wait, 25.0)
                assert rc == 0, f"SIPp exit code {rc}\n{sipp.log()}"
            await sim.wait_idle(2.0)
            (call,) = sim.calls.values()
            assert sim.calls_by_number() == {number: [call.call_id]}
            return call

    call = asyncio.run(main())
    assert call.final_status == final
    assert (call.requests, call.ended_by) == (requests, ended_by)
