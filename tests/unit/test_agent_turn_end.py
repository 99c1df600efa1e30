"""Which first words end the callee's turn at once (`callfleet.agent.turn_end`)."""

from __future__ import annotations

import pytest

from callfleet.agent.turn_end import is_bare_greeting


@pytest.mark.parametrize(
    "text",
    [
        "Hello?",
        "Hello.",
        "hi",
        "Yes?",
        "Yeah, hello?",
        "Hi, Maria speaking.",
        "Good morning.",
        "Who's calling?",
        "Dana here.",
    ],
)
def test_a_person_s_short_greeting_ends_the_turn(text: str) -> None:
    assert is_bare_greeting(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Um",
        "So I was thinking",
        "Hi, you've reached Dana, leave a message.",  # a machine's words
        "Hello, I'm not available right now.",
        "Hello, this is Dana, and I was just about to call you back about it.",  # long
        "Thank you for calling",
    ],
)
def test_anything_else_is_left_to_smart_turn(text: str) -> None:
    assert not is_bare_greeting(text)
