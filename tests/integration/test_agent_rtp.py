"""The agent wired to a real `RtpSession`, exactly as `SipCarrier` is to wire it.

Two RTP sessions on loopback: the callee's plays a reply and records what it hears;
the agent's has `on_audio = CallAudio.feed` and `source = CallAudio` (the two hooks),
and the agent runs on fakes (scripted STT/TTS, energy VAD), so this checks the media
path, pacing and the hang-up, not the models.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from callfleet import synth
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent
from callfleet.agent.testing import EnergyVAD, FakeEngines
from callfleet.telephony.carrier import EndedBy
from callfleet.telephony.rtp import RtpSession
from callfleet.telephony.sip.sdp import NegotiatedMedia


def _media(port: int) -> NegotiatedMedia:
    return NegotiatedMedia("127.0.0.1", port, 0, "PCMU", 101, "sendrecv")


def test_agent_over_real_rtp(tmp_path: Path) -> None:
    async def scenario() -> tuple[AgentOutcome, bytes]:
        callee = await RtpSession.open()
        ours = await RtpSession.open()
        heard = bytearray()
        callee.on_audio = heard.extend
        callee.source = synth.Playlist(
            [("wait", synth.silence(2.5)), ("reply", synth.speech_like(0.8, seed=11))]
        )
        audio = CallAudio()
        ours.on_audio = audio.feed  # the callee's 20 ms frames, decoded
        ours.source = audio  # the agent's voice, read on the RTP clock
        engines = FakeEngines(stt_lines=["Yes."], seconds_per_word=0.15)
        options = AgentOptions(
            first_sentence="Hello, this is Alex.", closing_line="Goodbye.", record=True
        )
        call = AgentCall("rtp-call", options, tmp_path / "rtp-call.wav")
        try:
            callee.apply(_media(ours.local_port))
            ours.apply(_media(callee.local_port))
            async with asyncio.timeout(20):
                outcome = await PipecatAgent(engines, vad_factory=EnergyVAD).run(
                    call, audio, asyncio.Event()
                )
        finally:
            await ours.close()
            await callee.close()
        return outcome, bytes(heard)

    outcome, heard = asyncio.run(scenario())
    assert outcome.ended_by is EndedBy.ASSISTANT
    turns = [(t.user, t.text) for t in outcome.transcript]
    assert turns == [
        ("assistant", "Hello, this is Alex."),
        ("user", "Yes."),
        ("assistant", "Goodbye."),
    ]
    frames = np.frombuffer(heard, dtype="<i2").astype(float).reshape(-1, 160)
    loud = np.sqrt((frames**2).mean(axis=1)) > 100
    assert loud[:40].any(), "the callee heard the first sentence within 0.8 s"
    assert loud[-100:].any(), "and the closing line before the end"
    assert outcome.recording_path is not None
