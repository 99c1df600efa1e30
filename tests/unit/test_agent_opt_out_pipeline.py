"""Opt-out and disclosures in the agent's pipeline, on fakes (scripted STT and TTS, the
real scripted policy, energy VAD) against a `PhoneLine` in real time."""

from __future__ import annotations

import asyncio

from tests.support.phone_line import Pause, PhoneLine, Say, WaitForAgent
from tests.unit.test_agent_conversation import SPEECH, converse

from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent
from callfleet.agent.testing import EnergyVAD, FakeEngines
from callfleet.domain.capabilities import Deployment, ineffective_fields
from callfleet.domain.conversation import Conversation
from callfleet.domain.disclosures import DISCLOSURES_PARAM, disclosure_lines
from callfleet.domain.opt_out import OPT_OUT_LINE
from callfleet.telephony.carrier import EndedBy

AI = "I'm an AI assistant calling for Acme."
RECORDED = "This call may be recorded."


def test_the_scripted_policy_hears_an_opt_out_confirms_and_hangs_up() -> None:
    engines = FakeEngines(
        stt_lines=["Please take me off your list.", "Hello?"], seconds_per_word=0.15
    )
    options = AgentOptions(first_sentence="Hi, this is Alex.", script=("Is this a good time?",))
    callee = [WaitForAgent(quiet_s=0.3), Say(SPEECH(0.8, seed=1)), Pause(10.0)]
    outcome, _line = converse(engines, options, callee, linger_s=0.5)

    assert outcome.opted_out is True
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.hangup_reason == 'opt-out: the callee said "Please take me off your list"'
    assert engines.ttss[0].spoken == ["Hi, this is Alex.", OPT_OUT_LINE]
    said = [(t.user, t.text) for t in outcome.transcript if t.user != "robot"]
    assert said == [
        ("assistant", "Hi, this is Alex."),
        ("user", "Please take me off your list."),
        ("assistant", OPT_OUT_LINE),
    ]


def test_a_near_miss_is_answered_as_usual() -> None:
    engines = FakeEngines(stt_lines=["Stop, let me think."], seconds_per_word=0.15)
    options = AgentOptions(first_sentence="Hi, this is Alex.", script=("Take your time.",))
    callee = [WaitForAgent(quiet_s=0.3), Say(SPEECH(0.8, seed=2)), WaitForAgent(quiet_s=0.3)]
    outcome, _line = converse(engines, options, callee, linger_s=0.3)
    assert outcome.opted_out is False
    assert engines.ttss[0].spoken[:2] == ["Hi, this is Alex.", "Take your time."]


def _keypad_call(
    options: AgentOptions, press: str, *, at_s: float, before_start: bool = False
) -> tuple[AgentOutcome, FakeEngines, float]:
    engines = FakeEngines(seconds_per_word=0.15)

    async def main() -> tuple[AgentOutcome, float]:
        audio = CallAudio()
        line = PhoneLine(audio, [Pause(12.0)])
        hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def callee() -> None:
            await line.run(linger_s=0.2)
            hangup.set()

        async def keypad() -> None:
            await asyncio.sleep(at_s)
            audio.dtmf(press)

        if before_start:
            audio.dtmf(press)  # pressed while the agent was still getting ready
        tasks = [asyncio.create_task(callee()), asyncio.create_task(keypad())]
        agent = PipecatAgent(engines, vad_factory=EnergyVAD)
        async with asyncio.timeout(30):
            outcome = await agent.run(AgentCall("keypad-call", options), audio, hangup)
        took = loop.time() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return outcome, took

    outcome, took = asyncio.run(main())
    return outcome, engines, took


def test_the_opt_out_digit_interrupts_the_agent_confirms_and_hangs_up() -> None:
    long_opening = "Hi, this is Alex from Acme Dental, " + "calling about your visit, " * 6
    options = AgentOptions(first_sentence=long_opening, opt_out_digit="9")
    outcome, engines, took = _keypad_call(options, "9", at_s=1.5)
    assert outcome.opted_out is True and outcome.ended_by is EndedBy.ASSISTANT
    assert engines.ttss[0].spoken[-1] == OPT_OUT_LINE
    assert took < 8  # the opening (7 s of words) was cut short; the callee would wait 12 s
    notes = [t.text for t in outcome.transcript if t.user == "robot"]
    assert notes == [
        "opt-out: the callee pressed 9 (opt_out_digit); the number goes on the do-not-call list"
    ]


def test_a_digit_pressed_before_the_pipeline_runs_still_opts_out() -> None:
    options = AgentOptions(first_sentence="Hi, this is Alex.", opt_out_digit="#")
    outcome, engines, _took = _keypad_call(options, "#", at_s=99, before_start=True)
    assert outcome.opted_out is True
    assert engines.ttss[0].spoken == [OPT_OUT_LINE]  # not even the opening


def test_another_digit_does_nothing() -> None:
    options = AgentOptions(first_sentence="Hi, this is Alex.", opt_out_digit="9")
    outcome, _engines, _took = _keypad_call(options, "1", at_s=0.5)
    assert outcome.opted_out is False and outcome.ended_by is None


def test_disclosures_come_before_the_first_sentence() -> None:
    engines = FakeEngines(stt_lines=["Okay."], seconds_per_word=0.15)
    options = AgentOptions(
        first_sentence="Hi, this is Alex.", script=("Is now good?",), disclosures=(AI, RECORDED)
    )
    # The callee waits out the pauses between the opening's sentences.
    callee = [WaitForAgent(quiet_s=1.0), Say(SPEECH(0.5, seed=3)), WaitForAgent(quiet_s=0.3)]
    outcome, line = converse(engines, options, callee, linger_s=0.3)
    assert engines.ttss[0].spoken[0] == f"{AI} {RECORDED} Hi, this is Alex."
    assert line.agent_onsets[0] < 1.0  # before anything else
    turns = [(t.user, t.text) for t in outcome.transcript]
    assert turns[0] == ("robot", f"disclosure: {AI} {RECORDED}")
    assert turns[1] == ("assistant", f"{AI} {RECORDED} Hi, this is Alex.")


def test_disclosures_come_before_the_scripts_first_line_without_a_first_sentence() -> None:
    engines = FakeEngines(seconds_per_word=0.15)
    options = AgentOptions(script=("Is now a good time?",), disclosures=(AI,))
    outcome, _line = converse(engines, options, [WaitForAgent(quiet_s=0.5)], linger_s=0.3)
    assert engines.ttss[0].spoken[:2] == [AI, "Is now a good time?"]
    assistant = [t.text for t in outcome.transcript if t.user == "assistant"]
    assert assistant[0].startswith(AI)


def test_guard_rails_choose_the_disclosures_and_warn_about_the_others() -> None:
    lines = disclosure_lines(
        [{"type": "tcpa:recording_disclosure", "action": "end_call"}, "tcpa:ai_disclosure", "x"],
        ai_disclosure=AI,
        recording_disclosure=RECORDED,
    )
    assert lines == (AI, RECORDED)  # the AI disclosure first, whatever the order asked
    assert disclosure_lines(None, ai_disclosure=AI, recording_disclosure=RECORDED) == ()
    parsed = Conversation.from_params({DISCLOSURES_PARAM: list(lines), "opt_out_digit": "9"})
    assert (parsed.disclosures, parsed.opt_out_digit) == (lines, "9")
    assert Conversation.from_params({"opt_out_digit": "x"}).opt_out_digit is None
    rails = ["tcpa:ai_disclosure", "pii", {"type": "tcpa:opt_out"}, "recording_disclosure", 7]
    notes = dict(ineffective_fields({"guard_rails": rails}, Deployment()))
    assert list(notes) == ["guard_rails[1]", "guard_rails[4]"]
    assert "'pii' has no effect" in notes["guard_rails[1]"]
