"""The opt-out detector on what the agent actually hears: every line the phone
simulator's people and voicemail boxes say, spoken in their own Piper voice,
through G.711 μ-law, transcribed by the agent's faster-whisper tiny.en, then matched.

It prints the detection rate on the opt-out people's lines (XX 25-27) and the
false-positive rate on every other (line, voice) the simulator speaks; the text-only
rates are in tests/unit/test_domain_opt_out.py. A false positive fails the test; a
missed line does not as long as each opt-out person is heard on one of their two
opt-out lines (the recognizer mishears: "do not call list" comes out as "duvet
call"), and the misses are printed.
"""

from __future__ import annotations

import pytest

from callfleet.agent.providers.whisper_stt import load_whisper, transcribe_pcm
from callfleet.agent.resample import Upsampler2x
from callfleet.domain.opt_out import opt_out_clause
from callfleet.simulator import voices
from callfleet.simulator.rules import persona_for, script_lines
from callfleet.telephony.rtp import g711

pytestmark = pytest.mark.slow


def _spoken() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(line, voice) pairs: the opt-out lines, and everything else the simulator says."""
    opt_out_lines = set(script_lines(opt_out=True))
    hits: set[tuple[str, str]] = set()
    others: set[tuple[str, str]] = set()
    for xx in range(60):  # people (00-39) and voicemail boxes (40-59)
        persona = persona_for(f"+1212555{100 + xx:04d}")
        for text in persona.texts:
            (hits if text in opt_out_lines else others).add((text, persona.voice))
    return hits, others


def _heard(text: str, voice: str) -> str:
    pcm = g711.decode("PCMU", g711.encode("PCMU", voices.render(text, voice)))  # the line
    return transcribe_pcm(load_whisper(), Upsampler2x().process(pcm + bytes(8000)))


def test_rates_on_the_persona_lines_as_the_agent_hears_them() -> None:
    opt_outs, others = _spoken()
    missed = [(t, v, h) for t, v in sorted(opt_outs) if opt_out_clause(h := _heard(t, v)) is None]
    false_positives = [
        (t, v, h) for t, v in sorted(others) if opt_out_clause(h := _heard(t, v)) is not None
    ]
    hit = len(opt_outs) - len(missed)
    print(
        f"\nopt-out detection as heard (Piper voices, G.711, Whisper tiny.en): "
        f"{hit}/{len(opt_outs)} opt-out persona lines ({100 * hit / len(opt_outs):.0f} %); "
        f"false positives: {len(false_positives)}/{len(others)} other (line, voice) pairs "
        f"({100 * len(false_positives) / len(others):.1f} %)"
    )
    for text, voice, heard in missed:
        print(f"  missed [{voice}] {text!r} heard as {heard!r}")
    assert false_positives == []
    # Each opt-out person says two opt-out lines (the second if the agent missed the
    # first): at least one of them must be heard as one, or the person stays callable.
    for xx in (25, 26, 27):
        persona = persona_for(f"+1212555{100 + xx:04d}")
        lines = {(text, persona.voice) for text in persona.lines[:2]}
        assert lines - {(t, v) for t, v, _ in missed}, (xx, missed)
