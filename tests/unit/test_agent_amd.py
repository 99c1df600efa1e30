"""Answering-machine detection: accuracy on a generated labelled set, and its timings."""

from __future__ import annotations

import statistics

from tests.support.speech_sets import amd_labelled_set, phone_channel

from callfleet import synth
from callfleet.agent.amd import AnsweringMachineDetector
from callfleet.telephony.carrier import AnsweredBy


def classify(pcm: bytes) -> AnsweringMachineDetector:
    detector = AnsweringMachineDetector()
    for offset in range(0, len(pcm), 320):  # 20 ms at a time, as the call delivers it
        detector.feed(pcm[offset : offset + 320])
    return detector


def test_accuracy_on_the_labelled_set_and_human_decision_time() -> None:
    cases = amd_labelled_set()
    correct = 0
    human_times: list[float] = []
    wrong: list[str] = []
    for expected, name, pcm in cases:
        detector = classify(phone_channel(pcm, 8000))
        got = detector.answered_by
        if got is expected:
            correct += 1
        else:
            wrong.append(f"{name}: {got}")
        if expected is AnsweredBy.HUMAN and detector.verdict is not None:
            human_times.append(detector.verdict.decided_after_s)
    accuracy = correct / len(cases)
    median = statistics.median(human_times)
    print(
        f"\nAMD (synthetic set): {correct}/{len(cases)} correct = {accuracy:.1%}; "
        f"median human decision {median:.2f} s after answer; wrong: {wrong}"
    )
    assert accuracy >= 0.95, wrong
    assert median <= 2.5


def test_a_beep_is_voicemail_and_its_end_is_when_a_message_may_start() -> None:
    detector = classify(synth.silence(1.0) + synth.beep(0.5) + synth.silence(1.0))
    assert detector.answered_by is AnsweredBy.VOICEMAIL
    assert detector.beep_hz is not None and abs(detector.beep_hz - 1000) <= 50
    assert detector.beep_started_at_s is not None and abs(detector.beep_started_at_s - 1.0) <= 0.05
    assert detector.beep_ended_at_s is not None and abs(detector.beep_ended_at_s - 1.5) <= 0.05


def test_a_beep_after_a_short_greeting_overrides_a_human_verdict() -> None:
    pcm = synth.speech_like(0.8, seed=9) + synth.silence(1.2) + synth.tone(1400.0, 0.4)
    detector = classify(pcm + synth.silence(1.0))
    assert detector.verdict is not None and detector.verdict.answered_by is AnsweredBy.HUMAN
    assert detector.answered_by is AnsweredBy.VOICEMAIL


def test_speech_is_not_a_beep() -> None:
    detector = classify(synth.human_chatter())
    assert detector.beep_started_at_s is None


def test_decisions_come_at_the_documented_moments() -> None:
    human = classify(synth.silence(0.5) + synth.speech_like(1.0, seed=3) + synth.silence(2.0))
    assert human.verdict is not None
    assert human.verdict.answered_by is AnsweredBy.HUMAN
    assert 2.2 <= human.verdict.decided_after_s <= 2.5  # greeting end + 0.8 s of silence

    machine = classify(synth.silence(0.5) + synth.voicemail_greeting(6.0))
    assert machine.verdict is not None
    assert machine.verdict.answered_by is AnsweredBy.VOICEMAIL
    assert machine.verdict.decided_after_s <= 0.5 + 2.0 + 0.3

    silent = classify(synth.silence(6.0))
    assert silent.verdict is not None and silent.verdict.answered_by is AnsweredBy.UNKNOWN
    assert silent.verdict.decided_after_s == 4.0
