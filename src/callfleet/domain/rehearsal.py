"""A rehearsal: a batch's first rows, each called as one of the phone simulator's personas.

A rehearsal renders a batch's first rows with the batch's real prompt, agent and
voices, but dials the simulator's test numbers (`+1 NPA 555-01XX`, see
`callfleet.simulator.rules`) instead of the rows' own numbers, so the operator
hears the agent against a person, one who talks over it, a silent one and a
voicemail box before anyone real is called. Row `k` of the rehearsal stands in
as persona `k mod 4`, the `k div 4`-th number of that persona's range: at most
five of each, hence `REHEARSAL_ROWS_MAX` (20). The persona ranges 25-29 belong
to other simulator behaviours and are never used here.

Pure logic: the numbers and what each call records of the row it stood in for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .call_fields import REHEARSAL_ROWS_MAX

__all__ = ["PERSONAS", "REHEARSAL_AREA", "StandIn", "stand_in_for"]

REHEARSAL_AREA = "212"
"""The area code of the test numbers a rehearsal dials (any area code behaves alike)."""


@dataclass(frozen=True)
class _Persona:
    name: str
    """How the API names it (`rehearsal_of.persona`)."""
    first_xx: int
    """The first `XX` of its range in the simulator's phone book."""
    last_xx: int


PERSONAS: tuple[_Persona, ...] = (
    _Persona("person", 0, 24),
    _Persona("talks-over", 30, 34),
    _Persona("silent", 35, 39),
    _Persona("voicemail", 40, 49),
)
"""In the order a rehearsal's rows take them."""


@dataclass(frozen=True)
class StandIn:
    """The simulator number a rehearsal row dials and the persona answering it."""

    number: str
    persona: str

    def record(self, index: int, real_number: str) -> dict[str, Any]:
        """What the call keeps of the row it stands in for (`rehearsal_of`)."""
        return {
            "index": index,
            "phone_number": real_number,
            "persona": self.persona,
            "dialled": self.number,
        }


def stand_in_for(position: int) -> StandIn:
    """The stand-in for the rehearsal's `position`-th row (0-based, below REHEARSAL_ROWS_MAX)."""
    if not 0 <= position < REHEARSAL_ROWS_MAX:
        raise ValueError(f"a rehearsal calls at most {REHEARSAL_ROWS_MAX} rows")
    persona = PERSONAS[position % len(PERSONAS)]
    xx = persona.first_xx + position // len(PERSONAS)
    assert xx <= persona.last_xx
    return StandIn(f"+1{REHEARSAL_AREA}55501{xx:02d}", persona.name)
