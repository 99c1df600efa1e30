"""Who stands in for which row of a rehearsal: the simulator's numbers, persona by persona."""

from __future__ import annotations

import pytest

from callfleet.dispatch.routing import Routes
from callfleet.domain.call_fields import REHEARSAL_ROWS_MAX
from callfleet.domain.rehearsal import stand_in_for
from callfleet.simulator.rules import Behaviour, persona_for


def test_the_rows_take_the_four_personas_in_turn_and_never_25_to_29() -> None:
    stand_ins = [stand_in_for(k) for k in range(REHEARSAL_ROWS_MAX)]
    assert [s.persona for s in stand_ins[:4]] == ["person", "talks-over", "silent", "voicemail"]
    numbers = [s.number for s in stand_ins]
    assert len(set(numbers)) == REHEARSAL_ROWS_MAX  # one number per call
    for s in stand_ins:
        xx = int(s.number[-2:])
        assert not 25 <= xx <= 29, s  # other simulator behaviours live there
        simulated = persona_for(s.number)  # what the simulator does at that number
        if s.persona == "voicemail":
            assert simulated.behaviour == Behaviour.VOICEMAIL and simulated.beep
        else:
            assert simulated.behaviour == Behaviour.HUMAN
        assert (simulated.barge_in is not None) == (s.persona == "talks-over"), s
        assert (simulated.greeting == "") == (s.persona == "silent"), s
    with pytest.raises(ValueError):
        stand_in_for(REHEARSAL_ROWS_MAX)


def test_a_rehearsal_call_is_paced_on_the_builtin_carrier_not_the_trunk() -> None:
    routes = Routes(
        number_trunk={("a", "+12125550199"): "t1"},
        number_cps={},
        trunk_cps={"t1": 2.0},
        default_trunk={"a": "t1"},
    )
    assert routes.pacing("a", "+12125550199", 5.0) == ("trunk:t1", 2.0)
    assert routes.pacing("a", None, 5.0) == ("trunk:t1", 2.0)
    assert routes.pacing("a", "+12125550199", 5.0, builtin=True) == ("caller:+12125550199", 5.0)
    assert routes.pacing("a", None, 5.0, builtin=True) == ("caller:builtin", 5.0)
