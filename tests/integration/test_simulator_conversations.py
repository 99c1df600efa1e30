"""The simulator's people over real SIP and RTP on loopback, against a scripted caller.

Our own `SipClient` and `RtpSession` place the calls; the caller plays the agent's
part with Piper sentences (the simulator's higher voice): it listens for the end of
each of the persona's lines (an energy VAD on what it receives) and answers after a
known delay, so the persona's measured latencies can be checked against what the caller really did.
The caller and the simulator share one event loop, hence one clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from tests.peers import read_wav

from callfleet import synth as audio
from callfleet.simulator import voices
from callfleet.simulator.rules import BARGE_IN_LINE, persona_for
from callfleet.simulator.sip_server import PhoneSimulator, SimulatedCall, SimulatorConfig
from callfleet.telephony.rtp import RtpSession
from callfleet.telephony.sip import SipClient
from callfleet.telephony.sip.call import Call, EndReason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not voices.engine().startswith("piper"), reason="Piper not installed"),
]

CONVERSING = "+12125550121"  # rings 6 s, talks 47 s; "Hello, this is Alex."
BARGING = "+12125550133"  # rings 6 s, talks 51 s; talks over the caller's first long turn
DANA = "+12125550100"  # rings 6 s, talks 20 s: 3.6 s and 12 s at 0.6
SILENT = "+12125550136"  # rings 6 s, talks 32 s, says nothing
VOICEMAIL_NO_BEEP = "+12125550150"  # rings 24 s
SPEECH_DBFS = -40.0
LATENCY_TOLERANCE_MS = 120.0
CALLER_VOICE = "joe-high"


def _loud(frame: bytes) -> bool:
    return 20 * math.log10(audio.rms(frame) + 1e-9) >= SPEECH_DBFS


@dataclass
class Turn:
    text: str
    delay_s: float
    """After the end of the persona's line, as the caller heard it."""


@dataclass
class ScriptedCaller:
    """The agent's side: an `AudioSource` of Piper sentences, and a VAD on what it hears.

    It waits for the persona to finish a line (`hangover_s` of quiet after its
    speech: longer than the pauses inside a line), then says its next turn
    `delay_s` after the persona's last loud frame. `stop_after_s` makes it stop
    talking that long after the persona starts talking over it (barge-in).
    """

    turns: Sequence[Turn]
    hangover_s: float = 0.6
    stop_after_s: float | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    heard_persona: list[tuple[float, float]] = field(default_factory=list)
    """The persona's utterances as heard: (first, last loud frame) times."""
    response_ms: list[float] = field(default_factory=list)
    """Per turn: from the arrival of the persona's last loud frame to our first frame sent."""
    sent_loud_frames: int = 0
    heard_over_us_at: float | None = None
    stopped_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _pcm: list[bytes] = field(default_factory=list)
    _playing: bytes = b""
    _pos: int = 0
    _next: int = 0
    _persona_start: float | None = None
    _persona_last: float = 0.0
    _answer_at: float | None = None
    _answer_from: float = 0.0

    def __post_init__(self) -> None:
        self._pcm = [voices.render(turn.text, CALLER_VOICE) for turn in self.turns]

    @property
    def talking(self) -> bool:
        return self._pos < len(self._playing)

    def say_now(self, text: str) -> None:
        self._playing, self._pos = voices.render(text, CALLER_VOICE), 0

    def read(self) -> bytes | None:
        now = self.loop.time()
        if self._answer_at is not None and now >= self._answer_at:
            self._answer_at = None
            self._playing, self._pos = self._pcm[self._next], 0
            self._next += 1
            self.response_ms.append((now - self._answer_from) * 1000)
        if not self.talking:
            return None
        over_us, stop_after = self.heard_over_us_at, self.stop_after_s
        if over_us is not None and stop_after is not None and now >= over_us + stop_after:
            self._playing, self.stopped_at = b"", now  # interrupted: stop at once
            self.stop_after_s = None  # (once)
            return None
        frame = self._playing[self._pos : self._pos + audio.FRAME_BYTES]
        self._pos += audio.FRAME_BYTES
        self.sent_loud_frames += _loud(frame)
        if not self.talking and self._next >= len(self._pcm):
            self.loop.call_later(0.5, self.done.set)
        return frame.ljust(audio.FRAME_BYTES, b"\x00")

    def on_audio(self, frame: bytes, age_s: float = 0.0) -> None:
        """What the persona sent; `age_s` is how long ago it arrived (our jitter buffer)."""
        now = self.loop.time() - age_s
        if _loud(frame):
            if self._persona_start is None:
                self._persona_start = now
                if self.talking and self.heard_over_us_at is None:
                    self.heard_over_us_at = now
            self._persona_last = now
        elif self._persona_start is not None and now - self._persona_last >= self.hangover_s:
            self.heard_persona.append((self._persona_start, self._persona_last))
            self._persona_start = None
            if self._next < len(self.turns) and not self.talking and self._answer_at is None:
                self._answer_from = self._persona_last
                self._answer_at = self._persona_last + self.turns[self._next].delay_s


@dataclass
class Placed:
    call: Call
    rtp: RtpSession


async def _dial(
    sim: PhoneSimulator, client: SipClient, number: str, caller: ScriptedCaller
) -> Placed:
    rtp = await RtpSession.open()
    rtp.source = caller
    # Timed at arrival, as the simulator times what it hears: on loopback the only
    # delays between the two are the jitter buffers, which a loaded box lets grow.
    rtp.on_audio = lambda frame: caller.on_audio(frame, len(rtp.jitter) * voices.FRAME_S)
    host, port = sim.address
    result = await client.invite(f"sip:{number}@{host}:{port}", media=rtp, ring_timeout_s=30)
    assert result.call is not None, result
    return Placed(result.call, rtp)


def _record(sim: PhoneSimulator, placed: Placed) -> SimulatedCall:
    return sim.calls[placed.call.dialog.call_id]


def _spurts(pcm: bytes, quiet_frames: int = 40) -> list[tuple[int, int]]:
    """Talk spurts in a recording: (first, last) loud frame indexes."""
    out: list[tuple[int, int]] = []
    start, last = -1, -1
    for index in range(len(pcm) // audio.FRAME_BYTES):
        frame = pcm[index * audio.FRAME_BYTES : (index + 1) * audio.FRAME_BYTES]
        if _loud(frame):
            if start < 0:
                start = index
            last = index
        elif start >= 0 and index - last >= quiet_frames:
            out.append((start, last))
            start = -1
    if start >= 0:
        out.append((start, last))
    return out


def test_a_person_greets_answers_each_turn_and_times_the_caller(tmp_path: Path) -> None:
    persona = persona_for(CONVERSING)
    turns = [
        Turn("Hello, this is Alex from Bright Dental, about your appointment.", 0.8),
        Turn("We have an opening next Tuesday at three in the afternoon.", 1.2),
        Turn("Perfect. I have booked you in.", 0.7),
        Turn("Thank you, goodbye.", 1.0),
    ]

    async def main() -> tuple[SimulatedCall, ScriptedCaller]:
        config = SimulatorConfig(time_scale=0.6, record_dir=tmp_path)
        async with PhoneSimulator(config) as sim, SipClient() as client:
            caller = ScriptedCaller(turns)
            placed = await _dial(sim, client, CONVERSING, caller)
            try:
                async with asyncio.timeout(40):
                    await caller.done.wait()
                await placed.call.hangup()
            finally:
                await placed.rtp.close()
            await sim.wait_idle(2.0)
            return _record(sim, placed), caller

    call, caller = asyncio.run(main())
    # it greets first, then says its lines in order, one per turn of ours
    assert call.said == [persona.greeting, *persona.lines]
    assert len(caller.heard_persona) == 4 and len(caller.response_ms) == 4
    assert caller.heard_persona[0][0] < min(t for t, _ in caller.heard_persona[1:])
    greeting_heard = caller.heard_persona[0][1] - caller.heard_persona[0][0]
    assert 0.9 < greeting_heard < 1.9
    # every line's latency, as the persona measured it, is the delay we answered with
    assert len(call.latencies_ms) == 4, call.latencies_ms
    for measured, actual in zip(call.latencies_ms, caller.response_ms, strict=True):
        assert abs(measured - actual) <= LATENCY_TOLERANCE_MS, (
            call.latencies_ms,
            caller.response_ms,
        )
    assert call.ended_by == "caller" and call.barge_in_stop_ms is None
    # the recording is the whole call as the simulator heard us: our four sentences
    assert call.recording_path is not None and call.recording_path.parent == tmp_path
    pcm, rate = read_wav(call.recording_path)
    assert (pcm, rate) == (bytes(call.heard), 8000)
    assert len(_spurts(pcm)) == 4
    loud = sum(_loud(pcm[i : i + audio.FRAME_BYTES]) for i in range(0, len(pcm), audio.FRAME_BYTES))
    assert abs(loud - caller.sent_loud_frames) <= 0.05 * caller.sent_loud_frames
    _assert_words(pcm, ["appointment", "afternoon", "goodbye"])


def _assert_words(pcm: bytes, words: list[str]) -> None:
    """Whisper (offline tiny.en) hears our words in the recording."""
    whisper = pytest.importorskip("callfleet.agent.providers.whisper_stt")
    samples = voices.resample(np.frombuffer(pcm, dtype="<i2"), 8000, 16000)
    pcm16k = np.clip(np.round(samples), -32767, 32767).astype("<i2").tobytes()
    text = whisper.transcribe_pcm(whisper.load_whisper(), pcm16k).lower()
    for word in words:
        assert word in text, text


def test_a_barge_in_talks_over_the_caller_and_times_its_stop() -> None:
    persona = persona_for(BARGING)
    turns = [
        Turn(
            "Hello, I am calling from Bright Dental about the appointment you asked us "
            "to book for you next week, and I have a few questions.",
            0.8,
        ),
        Turn("Sure, take your time.", 0.6),
    ]

    async def main() -> tuple[SimulatedCall, ScriptedCaller]:
        async with PhoneSimulator(SimulatorConfig(time_scale=0.6)) as sim, SipClient() as client:
            caller = ScriptedCaller(turns, stop_after_s=0.25)
            placed = await _dial(sim, client, BARGING, caller)
            try:
                async with asyncio.timeout(30):
                    await caller.done.wait()
                await placed.call.hangup()
            finally:
                await placed.rtp.close()
            await sim.wait_idle(2.0)
            return _record(sim, placed), caller

    call, caller = asyncio.run(main())
    assert call.said[:2] == [persona.greeting, BARGE_IN_LINE]
    assert caller.heard_over_us_at is not None and caller.stopped_at is not None
    # the persona came in about 1.2 s into our long turn, while we were talking
    first_turn_start = caller.heard_persona[0][1] + caller.response_ms[0] / 1000
    assert 1.1 < caller.heard_over_us_at - first_turn_start < 1.5
    stopped_ms = (caller.stopped_at - caller.heard_over_us_at) * 1000
    assert call.barge_in_stop_ms is not None
    assert abs(call.barge_in_stop_ms - stopped_ms) <= LATENCY_TOLERANCE_MS, (
        call.barge_in_stop_ms,
        stopped_ms,
    )
    # no latency for the greeting's turn is lost; the barge-in line ended with us quiet
    assert call.latencies_ms and abs(call.latencies_ms[0] - caller.response_ms[0]) <= 120


def test_refer_gets_202_and_a_notify_then_the_call_ends() -> None:
    async def main() -> tuple[SimulatedCall, bool, str, float]:
        async with PhoneSimulator(SimulatorConfig(time_scale=0.6)) as sim, SipClient() as client:
            caller = ScriptedCaller([Turn("One moment, I will put you through.", 0.5)])
            placed = await _dial(sim, client, DANA, caller)
            try:
                async with asyncio.timeout(10):
                    await caller.done.wait()
                loop = asyncio.get_running_loop()
                referred = loop.time()
                ok = await placed.call.refer("sip:+14155550123@agents.example.com")
                async with asyncio.timeout(5):
                    reason = await placed.call.wait_ended()  # the simulator's BYE, 2 s later
                waited = loop.time() - referred
            finally:
                await placed.rtp.close()
            await sim.wait_idle(2.0)
            return _record(sim, placed), ok, reason, waited

    call, ok, reason, waited = asyncio.run(main())
    assert ok  # 202, then a NOTIFY with a 200 sipfrag
    assert call.transferred_to == "sip:+14155550123@agents.example.com"
    assert call.requests == ["ACK", "REFER"]
    assert (reason, call.ended_by) == (EndReason.REMOTE_BYE, "simulator")
    assert 1.8 < waited < 3.5


def test_a_silent_person_says_nothing_but_records(tmp_path: Path) -> None:
    async def main() -> tuple[SimulatedCall, ScriptedCaller]:
        config = SimulatorConfig(time_scale=0.5, record_dir=tmp_path)
        async with PhoneSimulator(config) as sim, SipClient() as client:
            caller = ScriptedCaller([])
            placed = await _dial(sim, client, SILENT, caller)
            try:
                await asyncio.sleep(0.5)
                caller.say_now("Hello? Is anyone there?")
                await asyncio.sleep(2.5)
                await placed.call.hangup()
            finally:
                await placed.rtp.close()
            await sim.wait_idle(2.0)
            return _record(sim, placed), caller

    call, caller = asyncio.run(main())
    assert call.said == [] and caller.heard_persona == [] and call.latencies_ms == []
    assert call.recording_path is not None
    pcm, _ = read_wav(call.recording_path)
    assert len(_spurts(pcm)) == 1


def test_a_voicemail_without_a_beep_records_after_its_greeting() -> None:
    persona = persona_for(VOICEMAIL_NO_BEEP)
    message = "Hi Sam, this is Bright Dental. Please call us back about your appointment."

    async def main() -> tuple[SimulatedCall, ScriptedCaller, list[bytes]]:
        async with PhoneSimulator(SimulatorConfig(time_scale=0.1)) as sim, SipClient() as client:
            caller = ScriptedCaller([Turn(message, 0.3)], hangover_s=0.8)
            heard: list[bytes] = []
            on_audio = caller.on_audio

            def listen(frame: bytes, age_s: float = 0.0) -> None:
                heard.append(frame)
                on_audio(frame, age_s)

            caller.on_audio = listen  # type: ignore[method-assign]
            placed = await _dial(sim, client, VOICEMAIL_NO_BEEP, caller)
            try:
                async with asyncio.timeout(20):
                    await caller.done.wait()
                await placed.call.hangup()
            finally:
                await placed.rtp.close()
            await sim.wait_idle(2.0)
            return _record(sim, placed), caller, heard

    call, caller, heard = asyncio.run(main())
    assert call.beep_at is None and call.recording_from is not None
    assert not any(audio.tone_purity(f, 1000.0) > 0.9 and _loud(f) for f in heard)
    greeting_s = caller.heard_persona[0][1] - caller.heard_persona[0][0]
    assert greeting_s > 3.0  # long: a machine, to the agent's detector
    assert len(_spurts(bytes(call.heard))) == 1  # the message, and nothing of the greeting
    assert call.said == [] and persona.greeting.startswith("Hi, this is Sam.")
