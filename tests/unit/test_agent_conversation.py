"""The agent's pipeline end to end on fakes: real pipecat, scripted STT/LLM/TTS, energy VAD.

Each test runs a conversation in real time against `PhoneLine` (the callee's end
of a `CallAudio`, ticking every 20 ms like RTP), so turn-taking, interruptions and
pacing are the real ones; only the models are scripted.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
from tests.support.openai_server import FakeOpenAIServer
from tests.support.phone_line import Pause, PhoneLine, Say, WaitForAgent

from callfleet import synth
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent
from callfleet.agent.testing import EnergyVAD, FakeEngines
from callfleet.telephony.carrier import AnsweredBy, EndedBy

SPEECH = synth.speech_like


def converse(
    engines: FakeEngines,
    options: AgentOptions,
    script: list[Say | WaitForAgent | Pause],
    *,
    linger_s: float = 2.0,
    recording: Path | None = None,
    hang_up_after_s: float | None = None,
) -> tuple[AgentOutcome, PhoneLine]:
    async def main() -> tuple[AgentOutcome, PhoneLine]:
        agent = PipecatAgent(engines, vad_factory=EnergyVAD)
        audio = CallAudio()
        line = PhoneLine(audio, script)
        hangup = asyncio.Event()

        async def callee() -> None:
            await line.run(linger_s=linger_s)
            hangup.set()

        async def stop_later(seconds: float) -> None:
            await asyncio.sleep(seconds)
            hangup.set()

        tasks = [asyncio.create_task(callee())]
        if hang_up_after_s is not None:
            tasks.append(asyncio.create_task(stop_later(hang_up_after_s)))
        async with asyncio.timeout(45):
            outcome = await agent.run(AgentCall("test-call", options, recording), audio, hangup)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return outcome, line

    return asyncio.run(main())


def speakers(outcome: AgentOutcome) -> list[str]:
    return [turn.user for turn in outcome.transcript if turn.user != "robot"]


def test_scripted_policy_speaks_first_then_its_lines_then_closes_and_records(
    tmp_path: Path,
) -> None:
    engines = FakeEngines(stt_lines=["Hi.", "Yes.", "Sure."], seconds_per_word=0.15)
    options = AgentOptions(
        first_sentence="Hello, this is Alex calling.",
        script=("Are you the owner?", "Great."),
        closing_line="Thanks, goodbye.",
        record=True,
    )
    # Laid out by hand (fmt: skip): one turn of the callee per line.
    callee = [
        WaitForAgent(quiet_s=0.3), Say(SPEECH(0.6, seed=1), "hi"),
        WaitForAgent(quiet_s=0.3), Say(SPEECH(0.6, seed=2), "yes"),
        WaitForAgent(quiet_s=0.3), Say(SPEECH(0.6, seed=3), "sure"),
    ]  # fmt: skip
    outcome, line = converse(engines, options, callee, recording=tmp_path / "call.wav")

    assert outcome.error is None
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.model == "scripted"
    assert [(t.user, t.text) for t in outcome.transcript if t.user != "robot"] == [
        ("assistant", "Hello, this is Alex calling."),
        ("user", "Hi."),
        ("assistant", "Are you the owner?"),
        ("user", "Yes."),
        ("assistant", "Great."),
        ("user", "Sure."),
        ("assistant", "Thanks, goodbye."),
    ]
    times = [turn.at for turn in outcome.transcript]
    assert times == sorted(times)
    assert engines.ttss[0].spoken[0] == "Hello, this is Alex calling."
    # the agent spoke first, before the callee's first words
    assert line.agent_onsets[0] < 1.0
    # every reply came within the turn-taking budget (0.7 s timeout + fakes)
    assert all(r.latency_s is not None and r.latency_s < 2.0 for r in line.replies)

    assert outcome.recording_path == tmp_path / "call.wav"
    with wave.open(str(outcome.recording_path)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    callee_level, agent_level = np.abs(frames).mean(axis=0)
    assert callee_level > 50 and agent_level > 50
    # the left channel is what the callee said, the right what the agent said
    heard = np.frombuffer(bytes(line.agent_audio), dtype="<i2")
    assert np.abs(frames[:, 1].astype(int)).sum() <= np.abs(heard.astype(int)).sum() + 1


def test_wait_for_greeting_lets_the_callee_speak_first() -> None:
    engines = FakeEngines(stt_lines=["Hello?"], seconds_per_word=0.15)
    options = AgentOptions(first_sentence="Hi, this is Alex.", wait_for_greeting=True)
    callee = [Pause(0.6), Say(SPEECH(0.5, seed=4), "hello"), WaitForAgent(quiet_s=0.3)]
    outcome, line = converse(engines, options, callee, linger_s=0.5)

    assert speakers(outcome)[:2] == ["user", "assistant"]
    greeting_end = 0.6 + 0.5
    assert line.agent_onsets and line.agent_onsets[0] > greeting_end
    assert line.replies[0].latency_s is not None and line.replies[0].latency_s < 2.0
    assert outcome.ended_by is None  # the callee hung up


def test_silent_callee_gets_the_first_sentence_after_the_greeting_timeout() -> None:
    engines = FakeEngines(seconds_per_word=0.15)
    options = AgentOptions(first_sentence="Hello?", wait_for_greeting=True, greeting_timeout_s=1.5)
    outcome, line = converse(engines, options, [Pause(3.0)], linger_s=0.2)
    assert line.agent_onsets and 1.4 < line.agent_onsets[0] < 2.5
    assert ("robot", "no greeting heard; the agent speaks first") in [
        (t.user, t.text) for t in outcome.transcript
    ]


def test_llm_over_openai_protocol_is_interrupted_and_context_keeps_only_what_was_heard() -> None:
    long_reply = "Our offer today. It covers the roof. It covers the gutters. It lasts ten years."

    async def serve() -> FakeOpenAIServer:
        server = FakeOpenAIServer([long_reply, "Sorry, go ahead."])
        await server.start()
        return server

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(serve())
    try:
        # the server runs on its own loop in a thread while the conversation runs
        import threading

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        engines = FakeEngines(
            stt_lines=["Hello.", "Wait, stop."],
            llm_base_url=server.base_url,
            seconds_per_word=0.25,
        )
        options = AgentOptions(prompt="You sell roofs.", wait_for_greeting=True)
        # Laid out by hand (fmt: skip): one moment of the call per line.
        callee = [
            Pause(0.3), Say(SPEECH(0.5, seed=5), "hello"),
            Pause(2.2),  # the agent is a second into its long reply
            Say(SPEECH(0.7, seed=6), "stop"), WaitForAgent(quiet_s=0.4),
        ]  # fmt: skip
        outcome, line = converse(engines, options, callee, linger_s=0.5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(server.close())
        loop.close()

    assert outcome.error is None
    assert outcome.model == "fake-openai"
    assert outcome.interruptions >= 1
    first = server.requests[0]
    assert first["stream"] is True
    assert first["messages"][0] == {"role": "system", "content": "You sell roofs."}
    # the barge-in cut the reply: the agent fell silent within 500 ms of the callee's words
    stop_starts = 0.3 + 0.5 + 2.2
    agent = np.frombuffer(bytes(line.agent_audio), dtype="<i2").astype(float).reshape(-1, 160)
    loud = np.sqrt((agent**2).mean(axis=1)) > 100
    after = loud[int(stop_starts / 0.02) :]
    quiet_from = next(i for i in range(len(after)) if not after[i : i + 10].any())
    assert quiet_from * 0.02 < 0.5
    # what the LLM was told the agent said is only what was played before the cut
    history = server.requests[1]["messages"]
    said = " ".join(m["content"] for m in history if m["role"] == "assistant")
    assert said.startswith("Our offer today.")
    assert "ten years" not in said
    assert [m["role"] for m in history][-1] == "user"


def test_hangup_from_outside_stops_the_agent_promptly() -> None:
    engines = FakeEngines(seconds_per_word=0.4)
    options = AgentOptions(first_sentence="This is a rather long opening sentence to be cut.")
    outcome, line = converse(engines, options, [Pause(10.0)], hang_up_after_s=1.5)
    assert outcome.ended_by is None
    assert len(line.agent_audio) / 16000 < 3.0  # gone well before the sentence would end


def test_voicemail_leave_message_waits_for_the_beep() -> None:
    engines = FakeEngines(seconds_per_word=0.15)
    options = AgentOptions(
        first_sentence="Hi there.",
        wait_for_greeting=True,
        voicemail_action="leave_message",
        voicemail_message="Please call Acme back.",
    )
    greeting = synth.voicemail_greeting(2.6)
    callee = [Pause(0.3), Say(greeting, "greeting"), Say(synth.beep(0.5), "beep"), Pause(4.0)]
    outcome, line = converse(engines, options, callee, linger_s=0.5)

    assert outcome.answered_by is AnsweredBy.VOICEMAIL
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert engines.ttss[0].spoken == ["Please call Acme back."]
    beep_end = 0.3 + 2.6 + 0.5
    assert line.agent_onsets and min(line.agent_onsets) > beep_end
    notes = [t.text for t in outcome.transcript if t.user == "robot"]
    assert any(n.startswith("voicemail detected") for n in notes)


def test_voicemail_hangup_says_nothing() -> None:
    engines = FakeEngines(seconds_per_word=0.15)
    options = AgentOptions(first_sentence="Hi there.", wait_for_greeting=True)
    callee = [Pause(0.3), Say(synth.voicemail_greeting(2.6)), Say(synth.beep(0.5)), Pause(4.0)]
    outcome, line = converse(engines, options, callee, linger_s=0.5)

    assert outcome.answered_by is AnsweredBy.VOICEMAIL
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.hangup_reason == "voicemail"
    assert not line.agent_onsets
    assert len(line.callee_audio) / 16000 < 4.5  # hung up at the beep, not after it


def test_a_hello_over_the_opening_gets_the_opening_said_again_and_transcribed() -> None:
    # A slow voice (0.8 s to synthesise): the hello lands before the opening makes a sound.
    engines = FakeEngines(
        stt_lines=["Hello?", "Yes, go on."], seconds_per_word=0.15, tts_delay_s=0.8
    )
    options = AgentOptions(first_sentence="Hi, this is Alex from Acme, about your order.")
    outcome, _ = converse(
        engines,
        options,
        [
            Pause(0.3),
            Say(SPEECH(1.2, seed=1), "Hello?"),
            WaitForAgent(quiet_s=0.6),
            Say(SPEECH(1.0, seed=2), "Yes, go on."),
        ],
    )
    said = [(t.user, t.text) for t in outcome.transcript if t.user != "robot"]
    assert ("assistant", "Hi, this is Alex from Acme, about your order.") in said, said
    first_user = said.index(("user", "Hello?"))
    assert said[first_user + 1][0] == "assistant", said


def test_a_hello_is_answered_at_once_and_machine_words_after_it_switch_to_the_message() -> None:
    """ "Hello?" ... "I can't come to the phone, leave a message": the agent answers the
    hello without waiting for detection, then the words that follow turn the verdict
    to voicemail and it leaves its message instead of carrying on."""
    engines = FakeEngines(
        stt_lines=["Hello?", "Sorry, I can't come to the phone, please leave a message."],
        seconds_per_word=0.15,
    )
    options = AgentOptions(
        first_sentence="Hi, this is Alex from Acme Dental calling about your appointment.",
        wait_for_greeting=True,
        answered_by_enabled=True,
        voicemail_action="leave_message",
        voicemail_message="Please call Acme back.",
    )
    callee = [
        Pause(0.3),
        Say(SPEECH(0.5, seed=4), "hello"),
        Pause(0.9),
        Say(SPEECH(2.5, seed=5), "the machine's greeting"),
        Pause(5.0),
    ]
    outcome, line = converse(engines, options, callee, linger_s=0.5)

    spoken = [text for tts in engines.ttss for text in tts.spoken]
    assert spoken[0] == options.first_sentence, spoken  # the hello was answered
    assert spoken[-1] == "Please call Acme back.", spoken
    assert line.agent_onsets and min(line.agent_onsets) < 0.3 + 0.5 + 0.9 + 0.5
    assert outcome.answered_by is AnsweredBy.VOICEMAIL
    assert outcome.amd is not None and "machine words" in outcome.amd.reason
    assert outcome.ended_by is EndedBy.ASSISTANT
