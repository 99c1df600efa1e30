"""The simulated people's voices: resampling, Piper renders and their cache, and turn taking.

`Conversation` is driven here tick by tick with a fake clock, the way an RTP
session calls it (`read()` then `hear()` every 20 ms), against a scripted caller
with no transport delay, so every measured latency is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from callfleet import synth as audio
from callfleet.agent.amd import AnsweringMachineDetector
from callfleet.simulator import voices
from callfleet.simulator.rules import (
    BARGE_IN_LINE,
    PAUSING_LINES,
    Behaviour,
    Persona,
    persona_for,
)
from callfleet.telephony.carrier import AnsweredBy

FRAME = audio.FRAME_BYTES
TICK = 0.02
LOUD = audio.tone(300.0, TICK, level=0.2)  # one frame of "speech"
QUIET = bytes(FRAME)

needs_piper = pytest.mark.skipif(
    not voices.engine().startswith("piper"), reason="Piper or its voice is not installed"
)


def _sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return 0.5 * 32767 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def _pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples), -32767, 32767).astype("<i2").tobytes()


# -- resampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [200.0, 1000.0, 3000.0])
def test_resampling_to_8khz_keeps_a_tone_and_its_level(freq: float) -> None:
    out = voices.resample(_sine(freq, 22050), 22050, 8000)
    assert len(out) == 8000
    middle = _pcm(out[800:-800])  # away from the zero-padded edges
    assert audio.tone_level(middle, freq) == pytest.approx(0.5, rel=0.02)
    assert audio.tone_purity(middle, freq) > 0.99
    # the frequency, not just the level: the spectrum peaks at the same place
    spectrum = np.abs(np.fft.rfft(out[800:-800] * np.hanning(len(out) - 1600)))
    peak_hz = np.argmax(spectrum) * 8000 / (len(out) - 1600)
    assert abs(peak_hz - freq) < 2.0


@pytest.mark.parametrize("freq", [5000.0, 6000.0, 10000.0])
def test_resampling_removes_what_would_alias(freq: float) -> None:
    out = voices.resample(_sine(freq, 22050), 22050, 8000)
    pcm = _pcm(out[800:-800])
    assert audio.rms(pcm) < 0.001  # a plain decimation would fold it to 8000 - f at full level
    assert audio.tone_level(pcm, 8000 - freq if freq < 8000 else 10000 - freq) < 0.001


@pytest.mark.parametrize(("src", "dst"), [(16000, 8000), (8000, 16000), (44100, 8000)])
def test_resampling_between_other_rates(src: int, dst: int) -> None:
    out = voices.resample(_sine(1000.0, src), src, dst)
    assert len(out) == dst
    middle = out[dst // 10 : -dst // 10]
    level = math.sqrt(float(np.mean(middle * middle))) * math.sqrt(2) / 32767
    assert level == pytest.approx(0.5, rel=0.02)
    assert voices.resample(np.ones(1000), src, dst)[dst // 50 : -dst // 50] == pytest.approx(1.0)


def test_resampling_edge_cases() -> None:
    same = np.arange(5.0)
    assert list(voices.resample(same, 8000, 8000)) == list(same)
    assert voices.resample(np.zeros(0), 22050, 8000).size == 0
    with pytest.raises(ValueError, match="positive"):
        voices.resample(same, 0, 8000)


# -- rendering -----------------------------------------------------------------------------


def _level_dbfs(frame: bytes) -> float:
    return 20 * math.log10(audio.rms(frame) + 1e-9)


@needs_piper
def test_render_is_trimmed_phone_audio_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voices, "_cache_dir", tmp_path / "data")
    monkeypatch.setattr(voices, "_machine_dir", tmp_path / "machine")
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    pcm = voices.render("Hello, this is Dana.")
    assert len(pcm) % FRAME == 0
    assert 0.9 < len(pcm) / (2 * audio.SAMPLE_RATE) < 2.0
    assert _level_dbfs(pcm[:FRAME]) > -50 and _level_dbfs(pcm[-FRAME:]) > -50  # trimmed
    assert max(abs(s) for s in np.frombuffer(pcm, "<i2")) <= 0.61 * 32768  # levelled
    assert voices.render("Hello, this is Dana.") is pcm  # the process's cache
    assert voices.render("Hello, this is Dana.", "joe-high") != pcm
    for folder in ("data", "machine"):  # one file per (text, voice) in each
        assert len(list((tmp_path / folder).glob("*.pcm"))) == 2


@needs_piper
def test_a_line_is_synthesised_once_per_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new process (an empty in-process cache) reads the cache directory, and runs
    no Piper, even with a new data directory (the machine's cache has the line); a
    render is deterministic, so the cached file is what Piper would say."""
    monkeypatch.setattr(voices, "_cache_dir", tmp_path / "data")
    monkeypatch.setattr(voices, "_machine_dir", tmp_path / "machine")
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    lines = ["Sure, Tuesday afternoon works for me.", "I see. How much would that cost?"]
    first = voices.render_all(lines, "joe-high")
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    runs: list[int] = []
    monkeypatch.setattr(voices, "_piper", lambda texts, voice: runs.append(1) or {})
    assert voices.in_cache(lines[0], "joe-high")
    assert voices.render_all(lines, "joe-high") == first
    monkeypatch.setattr(voices, "_cache_dir", tmp_path / "another-data-dir")
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    assert voices.render_all(lines, "joe-high") == first
    assert runs == []
    assert len(list((tmp_path / "another-data-dir").glob("*.pcm"))) == 2  # copied there
    monkeypatch.undo()
    monkeypatch.setattr(voices, "_cache_dir", None)
    monkeypatch.setattr(voices, "_machine_dir", None)
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    assert voices.render(lines[1], "joe-high") == first[lines[1]]  # same audio, fresh run


def test_an_unknown_voice_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown voice 'en-us'"):
        voices.render("Hello.", "en-us")


def test_without_piper_or_espeak_lines_become_speech_like_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(voices, "engine", lambda: "noise")
    monkeypatch.setattr(voices, "_cache", type(voices._cache)())
    pcm = voices.render("one two three four five six seven eight nine ten")
    assert 3.0 < len(pcm) / (2 * audio.SAMPLE_RATE) < 3.5  # ~0.32 s a word
    assert audio.rms(pcm) > 0.02


def _amd(pcm: bytes) -> AnsweredBy | None:
    detector = AnsweringMachineDetector()
    detector.feed(bytes(8 * FRAME) + pcm + bytes(150 * FRAME))
    return detector.answered_by


@needs_piper
def test_greetings_are_told_apart_by_the_agents_detector() -> None:
    """People greet in under 2 s and wait; machines talk for longer than 3 s."""
    personas = [persona_for(f"+1212555{100 + xx:04d}") for xx in range(60)]
    spoken = [(xx, p) for xx, p in enumerate(personas) if p.greeting]
    rendered: dict[tuple[str, str], bytes] = {}
    for voice in {p.voice for _, p in spoken}:
        texts = [p.greeting for _, p in spoken if p.voice == voice]
        rendered |= {(t, voice): pcm for t, pcm in voices.render_all(texts, voice).items()}
    pcms = [rendered[(p.greeting, p.voice)] for _, p in spoken]
    for (xx, persona), pcm in zip(spoken, pcms, strict=True):
        seconds = len(pcm) / (2 * audio.SAMPLE_RATE)
        human = persona.behaviour is Behaviour.HUMAN
        assert seconds < 1.9 if human else seconds > 3.5, (xx, persona.greeting, seconds)
        if xx < 10 or xx % 5 == 0:  # every greeting and voice, not every name
            verdict = AnsweredBy.HUMAN if human else AnsweredBy.VOICEMAIL
            assert _amd(pcm) is verdict, (xx, persona.greeting)


def test_personas_follow_the_number_table() -> None:
    def at(xx: int) -> Persona:
        return persona_for(f"+1415555{100 + xx:04d}")

    dana = persona_for("+12125550100")
    assert (dana.name, dana.greeting, len(dana.lines), dana.barge_in) == (
        "Dana",
        "Hello, this is Dana.",
        3,
        None,
    )
    assert at(0) == dana  # any area code, same person
    assert all(at(xx).barge_in == BARGE_IN_LINE for xx in range(30, 35))
    silent = [at(xx) for xx in range(35, 40)]
    assert all(p.greeting == "" and p.lines == () for p in silent)
    assert all(p.behaviour is Behaviour.HUMAN for p in silent)
    sam = persona_for("+12125550140")
    assert sam.greeting.startswith("Hi, you've reached the voicemail of Sam.") and sam.beep
    assert not persona_for("+12125550150").beep
    assert persona_for("+12125550165").behaviour is Behaviour.BUSY
    assert len({persona_for(f"+1212555{100 + xx:04d}").lines for xx in range(30)}) > 10


# -- turn taking -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _line(text: str, seconds: float) -> voices.Utterance:
    return voices.Utterance(text, LOUD * round(seconds / TICK))


Caller = Callable[[float, bytes | None], bytes]


def _run(conversation: voices.Conversation, clock: Clock, caller: Caller, seconds: float) -> None:
    """Tick as an RTP session does; `caller(t, what_the_persona_sent)` answers each tick."""
    start = clock.now
    for tick in range(round(seconds / TICK)):
        t = round(tick * TICK, 6)
        clock.now = start + t
        sent = conversation.read()
        conversation.hear(caller(t, sent))


class ScriptedCaller:
    """Waits for the persona to finish, then after `delay` talks for `length`; in turn."""

    def __init__(self, turns: list[tuple[float, float]], hangover: float = 0.3) -> None:
        self.turns = list(turns)
        self.hangover = hangover
        self.heard_end: float | None = None
        self.talk_until = -1.0
        self.persona_talking = False
        self.last_persona = -1.0
        self.spoke_at: list[float] = []

    def __call__(self, t: float, sent: bytes | None) -> bytes:
        if sent is not None and sent != QUIET:
            self.persona_talking = True
            self.last_persona = t
        elif self.persona_talking and t - self.last_persona >= self.hangover:
            self.persona_talking = False
            self.heard_end = self.last_persona
        if self.heard_end is not None and self.turns:
            delay, length = self.turns[0]
            if t >= self.heard_end + delay - 1e-9:
                self.turns.pop(0)
                self.heard_end = None
                self.talk_until = t + length
                self.spoke_at.append(t)
        return LOUD if t < self.talk_until - 1e-9 else QUIET


def test_greets_then_answers_each_turn_in_order_and_measures_the_latency() -> None:
    clock = Clock()
    conversation = voices.Conversation(
        _line("hello", 1.0), [_line("one", 1.5), _line("two", 0.8)], clock=clock
    )
    caller = ScriptedCaller([(0.6, 2.0), (1.1, 1.0), (0.42, 1.5)])
    _run(conversation, clock, caller, 20.0)
    assert conversation.said == ["hello", "one", "two"]
    assert conversation.latencies_ms == pytest.approx([600.0, 1100.0, 420.0], abs=1e-6)
    assert conversation.caller_turns == 3
    assert not caller.turns and conversation.finished
    # 0.3 s pickup pause, then the greeting's 50 frames: the last one is sent at 1.28 s
    assert caller.spoke_at[0] == pytest.approx(1.28 + 0.6)


def test_waits_while_the_caller_talks_and_never_starts_over_them() -> None:
    clock = Clock()
    conversation = voices.Conversation(_line("hello", 0.5), [_line("one", 0.5)], clock=clock)
    sent: list[tuple[float, bool]] = []

    def caller(t: float, out: bytes | None) -> bytes:
        sent.append((t, out is not None))
        # after the greeting (0.3 + 0.5 s): talk 1 s, pause 0.6 s (less than the
        # hangover), talk 1 s more, then quiet
        talking = 1.0 <= t < 2.0 or 2.6 <= t < 3.6
        return LOUD if talking else QUIET

    _run(conversation, clock, caller, 6.0)
    assert conversation.said == ["hello", "one"]
    started = min(t for t, speaking in sent if speaking and t > 1.0)
    assert started == pytest.approx(3.58 + 0.8 + TICK)  # 0.8 s of quiet after the last loud frame
    assert conversation.caller_turns == 1
    assert conversation.latencies_ms == pytest.approx([220.0])  # the greeting's last frame: 0.78 s


def test_a_caller_talking_over_the_end_of_a_line_gets_no_latency() -> None:
    clock = Clock()
    conversation = voices.Conversation(_line("hello", 1.0), [], clock=clock)
    _run(conversation, clock, lambda t, _: LOUD if 0.9 <= t < 2.0 else QUIET, 4.0)
    assert conversation.latencies_ms == []
    assert conversation.caller_turns == 1


def test_runs_out_of_lines_and_listens() -> None:
    clock = Clock()
    conversation = voices.Conversation(_line("hello", 0.4), [_line("one", 0.4)], clock=clock)
    caller = ScriptedCaller([(0.5, 0.5)] * 4)
    _run(conversation, clock, caller, 12.0)
    assert conversation.said == ["hello", "one"]
    assert len(caller.spoke_at) == 2  # nothing more to answer: the caller waits for ever
    assert conversation.latencies_ms == pytest.approx([500.0, 500.0])


def test_barge_in_talks_over_the_first_long_spurt_and_times_the_stop() -> None:
    clock = Clock()
    conversation = voices.Conversation(
        _line("hello", 0.5), [_line("back", 0.5)], barge_in=_line("hold on", 1.0), clock=clock
    )
    persona_onset: list[float] = []

    def caller(t: float, out: bytes | None) -> bytes:
        # a short turn first (not barged into), then a long one that stops 0.34 s after
        # the persona starts talking over it
        if out is not None and t > 3.5 and not persona_onset:
            persona_onset.append(t)
        if 1.0 <= t < 1.8:
            return LOUD
        if t >= 3.5 and (not persona_onset or t < persona_onset[0] + 0.34):
            return LOUD
        return QUIET

    _run(conversation, clock, caller, 8.0)
    assert persona_onset == [pytest.approx(3.5 + 1.2)]
    assert conversation.said == ["hello", "back", "hold on"]
    assert conversation.barge_in_stop_ms == pytest.approx(340.0)


def test_barge_in_against_a_caller_who_never_stops() -> None:
    clock = Clock()
    conversation = voices.Conversation(
        _line("hello", 0.5), [], barge_in=_line("hold on", 1.0), clock=clock
    )
    _run(conversation, clock, lambda t, _: LOUD if t >= 1.0 else QUIET, 6.0)
    assert conversation.said == ["hello", "hold on"]
    assert conversation.barge_in_stop_ms is None


def test_hush_and_silence() -> None:
    clock = Clock()
    conversation = voices.Conversation(_line("hello", 1.0), [], clock=clock)
    frames: Iterator[bytes | None] = (conversation.read() for _ in range(30))
    assert sum(f is not None for f in frames) == 30 - 15  # 0.3 s pickup pause, then speech
    conversation.hush()
    assert conversation.read() is None and not conversation.speaking
    silent = voices.Conversation(None, clock=clock)
    _run(silent, clock, lambda t, _: LOUD if t < 1.0 else QUIET, 3.0)
    assert (silent.said, silent.latencies_ms, silent.caller_turns) == ([], [], 1)


def test_under_way_keeps_a_person_on_the_line_until_the_talk_is_over() -> None:
    clock = Clock()
    conversation = voices.Conversation(_line("hello", 1.0), [_line("one", 1.0)], clock=clock)
    seen: dict[float, bool] = {}

    def caller(t: float, _: bytes | None) -> bytes:
        seen[t] = conversation.under_way(2.0)
        return LOUD if 2.0 <= t < 3.0 else QUIET  # answers the greeting once, then quiet

    _run(conversation, clock, caller, 12.0)
    assert seen[0.0] and seen[1.0]  # about to greet, greeting (0.3 .. 1.28 s)
    assert seen[1.9]  # the caller has a moment (2 s) to answer the greeting
    assert seen[3.5]  # the caller's turn is ending (quiet from 2.98 s)
    assert seen[4.5]  # saying "one" (3.8 .. 4.78 s)
    assert seen[6.5]  # the caller has 2 s to answer "one"
    assert not seen[7.0]  # and did not: the talk is over
    assert conversation.said == ["hello", "one"]


def test_under_way_without_a_word_from_the_caller() -> None:
    clock = Clock()
    conversation = voices.Conversation(_line("hello", 0.5), [_line("one", 1.0)], clock=clock)
    states = []
    for tick in range(200):
        clock.now = 100.0 + tick * TICK
        conversation.read()
        conversation.hear(QUIET)
        states.append(conversation.under_way(2.0))
    # pause 0.3 s + greeting 0.5 s, then 2 s for an answer that never comes
    assert all(states[:139]) and not any(states[141:])
    assert not voices.Conversation(None, clock=clock).under_way(2.0)  # a silent person
    conversation.hush()
    assert not conversation.under_way(2.0)


def test_people_at_28_and_29_pause_mid_sentence() -> None:
    from callfleet.simulator.hesitation import gaps, pauses, voiced
    from callfleet.simulator.script import utterance

    for line in PAUSING_LINES:  # the people's and the benchmark's
        written = pauses(line)
        assert written and all(0.4 <= p <= 0.8 for p in written), line
    for xx in (28, 29):
        persona = persona_for(f"+1212555{100 + xx:04d}")
        assert (
            persona.behaviour is Behaviour.HUMAN and persona.greeting and persona.barge_in is None
        )
        assert set(persona.lines) <= set(PAUSING_LINES)
        for line in persona.lines:
            written = pauses(line)
            assert voiced(line) in persona.texts  # rendered ahead of the call, whole
            rendered = {voiced(line): voices.render(voiced(line), persona.voice)}
            said = utterance(line, rendered)
            assert "[" not in said.text and "[" not in voiced(line)
            # each pause is there, at least as long as written: the voice's gap, stretched
            longer = len(said.pcm) - len(rendered[voiced(line)])
            assert 0 < longer <= round(sum(written) * audio.SAMPLE_RATE) * 2
            heard = sorted(length for _, length in gaps(said.pcm))
            assert len(heard) >= len(written) and all(
                got >= want - 0.011
                for got, want in zip(heard[::-1], sorted(written, reverse=True), strict=False)
            ), (line, gaps(said.pcm))
    # the rest of the people's range is unchanged
    assert not any(
        "[" in line for xx in range(28) for line in persona_for(f"+1212555{100 + xx:04d}").lines
    )
