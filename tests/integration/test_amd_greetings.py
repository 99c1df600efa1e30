"""Answering-machine detection by meaning, on greetings written apart from the detector.

`tests/data/greetings.jsonl` holds people and machines answering in many styles
(see `tests.support.greetings`), spoken by espeak-ng's voices through the phone
channel; the detector hears them as on a call, with the agent's Whisper giving it
the words of each stretch of speech when a call would. Hanging up on a person
costs more than leaving a message on a machine, so people are scored apart.
"""

from __future__ import annotations

import asyncio
import statistics

import pytest
from tests.support.greetings import detect, greeting_call, load_greetings

from callfleet.agent.amd import AnsweringMachineDetector
from callfleet.agent.providers.whisper_stt import load_whisper
from callfleet.telephony.carrier import AnsweredBy

# espeak-ng's many voices speak the greetings: scripts/test-env.sh installs it, and
# without it these tests fail (the agent's espeak provider raises), never skip.
pytestmark = pytest.mark.slow


def test_the_labelled_set_is_broad() -> None:
    greetings = load_greetings()
    people = [g for g in greetings if g.who == "person"]
    machines = [g for g in greetings if g.who == "machine"]
    assert len(greetings) >= 60 and len(people) >= 30 and len(machines) >= 30
    assert {g.beep for g in machines} == {True, False}
    assert any(len(g.parts) > 1 for g in people) and any(len(g.parts) > 1 for g in machines)
    assert any(" | " in g.text for g in people) and any(" | " in g.text for g in machines)
    assert len({p.voice for g in greetings for p in g.parts}) >= 6


def test_people_and_machines_are_told_apart_by_what_they_say() -> None:
    model = load_whisper()
    right = {"person": 0, "machine": 0}
    total = {"person": 0, "machine": 0}
    times: dict[str, list[float]] = {"person": [], "machine": []}
    wrong: list[str] = []
    for i, greeting in enumerate(load_greetings()):
        found = detect(asyncio.run(greeting_call(greeting, i)), model)
        total[greeting.who] += 1
        if found.answered_by is greeting.expected:
            right[greeting.who] += 1
        else:
            wrong.append(f"{greeting.text!r}: {found.answered_by} {found.decided} {found.heard}")
        if found.decided is not None:
            times[greeting.who].append(found.decided.decided_after_s)
    people, machines = right["person"] / total["person"], right["machine"] / total["machine"]
    print(
        f"\nAMD on {sum(total.values())} written greetings: people {right['person']}/"
        f"{total['person']} ({people:.1%}), machines {right['machine']}/{total['machine']} "
        f"({machines:.1%}); median verdict people {statistics.median(times['person']):.2f} s, "
        f"machines {statistics.median(times['machine']):.2f} s; wrong: {wrong}"
    )
    assert people >= 0.96, wrong
    assert machines >= 0.9, wrong


def test_machine_words_heard_after_a_hello_revise_a_human_verdict() -> None:
    """ "Hello? ... gotcha, leave a message": the agent may already be answering the
    hello; the words that follow turn the verdict to voicemail, and `hear` says so."""
    detector = AnsweringMachineDetector(hears_words=True)
    assert detector.hear("Hello?") is not None
    assert detector.answered_by is AnsweredBy.HUMAN
    revised = detector.hear("Ha, gotcha, this is Mia's voicemail. Leave a message!")
    assert revised is not None and revised.answered_by is AnsweredBy.VOICEMAIL
    assert detector.answered_by is AnsweredBy.VOICEMAIL
    assert detector.verdict is not None and detector.verdict.answered_by is AnsweredBy.HUMAN
