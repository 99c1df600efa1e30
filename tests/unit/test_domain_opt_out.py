"""The opt-out detector: hits, near misses, and its rates on the simulator's people."""

from __future__ import annotations

import pytest

from callfleet.domain.opt_out import PhraseBook, normalise, opt_out_clause, phrase_book
from callfleet.simulator.rules import OPT_OUT_LINES, persona_for, script_lines

HITS = [
    "Stop calling me.",
    "stop calling",
    "Please stop calling this number!",
    "Quit phoning us.",
    "Take me off your list.",
    "Can you take me off your calling list, please?",
    "Remove me from your list.",
    "Remove my number from your system.",
    "Remove me.",
    "remove me please",
    "Unsubscribe.",
    "Unsubscribe me.",
    "How do I unsubscribe?",
    "Don't call this number again.",
    "Do not call me again.",
    "Don’t call me anymore",  # a typographic apostrophe
    "Never call here again.",
    "Don't ever call me again!",
    "Put me on your do not call list.",
    "Put me on your do-not-call list.",
    "Add this number to the do not call list.",
    "I'm on the do not call registry.",
    "I don't want any more calls.",
    "I do not want to be called again.",
    "No more calls, please.",
    "I want to opt out.",
    "Opt me out.",
    "Take me off.",
    "Hello? Yes. Look, I'm busy. Please take me off your list, thank you.",
    "Who is this? Don't call me.",
    "TAKE ME OFF YOUR LIST",
    # Whisper tiny.en on the simulator's opt-out person, over the phone:
    "I'm not interested. Please take me off your lid.",
    "I'm Ed. Please remove me from your lid.",
]

NEAR_MISSES = [
    "Stop, let me think.",
    "I don't want to stop the service.",
    "Don't call me sweetheart.",
    "Don't call me sir, I work for a living.",
    "Don't call me, I'll call you.",
    "Please don't take me off your list.",
    "I don't want to unsubscribe.",
    "Can you stop for a second?",
    "Stop. Wait. What was that again?",
    "Call me back tomorrow.",
    "I'm not interested.",
    "Can you remove the late fee from my account?",
    "Take me through the options.",
    "Put me on the list for Tuesday.",
    "I never call anyone back.",
    "Remove the appointment from Friday and call me next week.",
    "They called me again yesterday.",
    "Don't worry, you can call me again next week.",
    "",
]


@pytest.mark.parametrize("text", HITS)
def test_an_opt_out_is_heard(text: str) -> None:
    assert opt_out_clause(text) is not None, normalise(text)


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_a_near_miss_is_not_an_opt_out(text: str) -> None:
    assert opt_out_clause(text) is None, normalise(text)


def test_the_clause_returned_is_the_one_that_asked() -> None:
    said = "Hi. Look, I'm busy. Please take me off your list. Thanks."
    assert opt_out_clause(said) == "Please take me off your list"


def test_normalisation_folds_case_apostrophes_and_spellings() -> None:
    assert normalise("Don't — I am NOT,   do-not-call!") == "dont im not dont call"
    assert normalise("any more") == "anymore"


def test_the_phrase_language() -> None:
    book = PhraseBook.parse(
        "# a comment\n(go|go away|) now$\n^hello there\n!not now\nleave * alone\n\n"
    )
    assert book.clause("please go away now") is not None
    assert book.clause("now") is not None  # the empty alternative
    assert book.clause("go away now please") is not None  # politeness after `$`
    assert book.clause("go away now or later") is None  # `$`: the clause's end
    assert book.clause("hello there") is not None
    assert book.clause("well hello there") is None  # `^`: the clause's start
    assert book.clause("not now") is None  # a veto
    assert book.clause("leave me alone") is not None  # `*`: any one word
    assert book.clause("leave alone") is None


def test_the_phrase_file_ships_with_the_package() -> None:
    book = phrase_book()
    assert len(book.patterns) >= 10 and book.vetoes


def test_rates_on_the_simulator_persona_lines() -> None:
    """The detection rate on the opt-out people's lines and the false-positive rate
    on every other line the simulator's people and voicemail boxes say (as text;
    `tests/integration/test_agent_opt_out.py` hears them over the phone)."""
    opt_outs = script_lines(opt_out=True)
    others = script_lines(opt_out=False)
    assert set(OPT_OUT_LINES) <= set(opt_outs)
    assert not set(opt_outs) & set(others)
    hits = [line for line in opt_outs if opt_out_clause(line) is not None]
    false_positives = [line for line in others if opt_out_clause(line) is not None]
    print(
        f"\nopt-out detection: {len(hits)}/{len(opt_outs)} opt-out persona lines "
        f"({100 * len(hits) / len(opt_outs):.0f} %); false positives: "
        f"{len(false_positives)}/{len(others)} other persona lines "
        f"({100 * len(false_positives) / len(others):.1f} %)"
    )
    assert len(hits) == len(opt_outs)
    assert false_positives == []


def test_the_opt_out_people_are_xx_25_to_27() -> None:
    for xx, line in zip((25, 26, 27), OPT_OUT_LINES, strict=True):
        persona = persona_for(f"+1212555{100 + xx:04d}")
        assert persona.greeting and persona.lines[0] == line
    assert persona_for("+12125550124").lines[0] not in OPT_OUT_LINES
    assert persona_for("+12125550128").lines[0] not in OPT_OUT_LINES
