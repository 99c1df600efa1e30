"""Every simulated person is understood: each persona's lines, spoken by its voice
(Piper, `callfleet.simulator.voices`) and sent through a G.711 mu-law phone channel,
are transcribed by the agent's default STT (faster-whisper tiny.en, as
`LocalEngines` loads it) with a word error rate of at most 10 % per persona.
A line with pauses in it (the pausing people, XX 28-29) is heard whole, as a
caller hears it: voiced as one sentence, its pauses stretched to length
(`callfleet.simulator.script.utterance`).

The renders go to a fresh cache directory, so this measures the voice as a new
machine makes it; a per-persona table is printed (`pytest -s`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from tests.support.speech_sets import word_error_rate

from callfleet.agent.providers.whisper_stt import load_whisper, transcribe_pcm
from callfleet.agent.resample import Upsampler2x
from callfleet.simulator import voices
from callfleet.simulator.rules import Persona, persona_for
from callfleet.simulator.script import utterance
from callfleet.telephony.rtp import g711

pytestmark = pytest.mark.slow

WER_LIMIT = 0.10


def _speaking_personas() -> dict[int, Persona]:
    """Every persona with something to say, by XX (whatever rules.py holds)."""
    personas = {xx: persona_for(f"+1212555{100 + xx:04d}") for xx in range(100)}
    return {xx: p for xx, p in personas.items() if p.texts}


def _hear(model: object, pcm: bytes) -> str:
    phone = g711.decode("PCMU", g711.encode("PCMU", pcm))
    return transcribe_pcm(model, Upsampler2x().process(phone + bytes(8000)))  # type: ignore[arg-type]


def _line_heard(
    model: object, line: str, voice: str, rendered: dict[tuple[str, str], bytes]
) -> tuple[str, str]:
    """(the line's words, what the caller hears): its render, its pauses as silence."""
    said = utterance(line, {text: pcm for (text, v), pcm in rendered.items() if v == voice})
    return said.text, _hear(model, said.pcm)


def test_every_persona_is_transcribed_within_the_wer_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert voices.engine().startswith("piper"), voices.engine()
    monkeypatch.setattr(voices, "_cache_dir", tmp_path)
    monkeypatch.setattr(voices, "_machine_dir", None)
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    personas = _speaking_personas()
    by_voice: dict[str, set[str]] = defaultdict(set)
    for persona in personas.values():
        by_voice[persona.voice].update(persona.texts)
    model = load_whisper()
    rendered: dict[tuple[str, str], bytes] = {}
    for voice, texts in sorted(by_voice.items()):
        for text, pcm in voices.render_all(sorted(texts), voice).items():
            rendered[(text, voice)] = pcm
    heard: dict[tuple[str, str], tuple[str, str]] = {}  # (line, voice): the same line heard once

    rows, failing = [], []
    for xx, persona in personas.items():
        said = [line for line in (persona.greeting, *persona.lines, persona.barge_in) if line]
        words = errors = 0.0
        misheard = []
        for line in said:
            key = (line, persona.voice)
            if key not in heard:
                heard[key] = _line_heard(model, line, persona.voice, rendered)
            text, got = heard[key]
            wer = word_error_rate(text, got)
            words += len(text.split())
            errors += wer * len(text.split())
            if wer > 0:
                misheard.append(f"{text!r} -> {got!r}")
        wer = errors / words
        rows.append(
            f"{xx:02d}  {persona.behaviour:<9}  {persona.voice:<8}  {words:>5.0f}  {wer:6.1%}"
        )
        if wer > WER_LIMIT:
            failing.append(f"{xx:02d} ({wer:.0%}): {'; '.join(misheard)}")
    print("\nXX  persona    voice     words     WER\n" + "\n".join(rows))
    print(f"lines rendered: {len(rendered)}, heard: {len(heard)}; personas: {len(personas)}")
    assert not failing, "\n".join(failing)
