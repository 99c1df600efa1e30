"""The simulator's phone book: how each test number behaves.

Numbers `+1 NPA 555-01XX` (any area code) behave by `XX`, as the README's
test-number table says. Durations are realistic (a US ring cycle is 6 s) and are
multiplied by a time scale: 0 gives instant outcomes for load tests.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["Behaviour", "Persona", "RING_CYCLE_S", "persona_for"]

RING_CYCLE_S = 6.0
_TEST_NUMBER = re.compile(r"^\+1\d{3}55501(\d\d)$")


class Behaviour(enum.StrEnum):
    HUMAN = "human"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    DECLINE = "decline"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Persona:
    """What the phone at a number does, with its timings in seconds (unscaled)."""

    behaviour: Behaviour
    ring_s: float = 0.0
    talk_s: float = 0.0
    greeting_s: float = 0.0


def persona_for(number: str) -> Persona:
    match = _TEST_NUMBER.match(number)
    if match is None:
        return Persona(Behaviour.UNKNOWN)
    xx = int(match.group(1))
    if xx < 40:
        rings = 1 + xx % 3
        return Persona(Behaviour.HUMAN, ring_s=rings * RING_CYCLE_S, talk_s=20.0 + (xx * 7) % 40)
    if xx < 60:
        return Persona(Behaviour.VOICEMAIL, ring_s=4 * RING_CYCLE_S, greeting_s=8.0)
    if xx < 70:
        return Persona(Behaviour.BUSY, ring_s=1.0)
    if xx < 80:
        return Persona(Behaviour.NO_ANSWER)
    if xx < 90:
        return Persona(Behaviour.DECLINE, ring_s=(1 + xx % 2) * RING_CYCLE_S)
    return Persona(Behaviour.UNREACHABLE, ring_s=0.5)
