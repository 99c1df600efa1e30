"""Answering-machine detection from the first seconds of a call's audio.

Two detectors share one pass over the callee's 20 ms frames (8 kHz 16-bit PCM):

- **Timing of the greeting.** A person picking up says something short ("Hello?",
  "Hi, this is Dana.") and then waits for the caller; a machine plays a greeting
  that goes on. Speech is what rises `speech_above_floor_db` over a floor that
  tracks the quietest recent frame (so steady line noise never counts), is not a
  pure tone, and is voiced often enough (low spectral flatness) to be a voice
  rather than a hiss. An utterance ends after `after_greeting_silence_s` of quiet;
  if it ended within `max_human_greeting_s` of its start the callee is a human.
  Speech still going at `max_human_greeting_s` is a machine's greeting.
- **The beep.** A steady, pure tone in the 400-2600 Hz band (machines use about
  1 kHz) for at least `beep_min_s` means voicemail whatever was decided before;
  `beep_ended_at_s` says when it stopped, which is when a message may start.

- **The words.** With `hears_words`, the call's speech-to-text hands each stretch of
  the greeting to `hear(text)`. A machine's greeting says what it is ("leave a
  message", "after the tone", "not available", "can't come to the phone", "you've
  reached"); a person's says who is there ("speaking", "how can I help", "who's
  calling", a question). Machine words win over person words. Words decide as
  soon as they come, and while they may still come a long greeting is not taken
  for a machine by its length alone: a person who answers "Good morning, Harper
  and Finch, Rebecca speaking, how can I help you?" talks for four seconds. A long
  greeting whose words (`words_grace_s` after it fell silent) name no machine is a
  person's: machines say what they are, and hanging up on a person costs more than
  a message left on a machine (if the words come later still, or a beep, the
  verdict is revised). Only a greeting that runs `max_wordless_greeting_s` without
  a pause is a machine by length.
- **Keeps deciding.** A human verdict is not final: a beep, or machine words heard
  in the greeting's first `revise_within_s` ("Hello? ... Ha, gotcha, leave a
  message"), revise it to voicemail (`revised`), and `feed`/`hear` return the
  revision so the agent, which may already be answering the "Hello?", switches to
  the voicemail action.

Nothing heard for `initial_silence_s`, or no decision by `max_analysis_s` (noise,
mumbling), gives `unknown`. The verdict never waits for more than the greeting
plus its trailing silence, which is about when the agent's end-of-turn detector
would let it speak anyway, so detection does not delay the agent's first words.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

import numpy as np

from callfleet.telephony.carrier import AnsweredBy

__all__ = ["AmdConfig", "AmdVerdict", "AnsweringMachineDetector", "words_say"]

_RATE = 8000
_FRAME = 160
_FRAME_S = _FRAME / _RATE
_WINDOW = 2 * _FRAME
_BIN_HZ = _RATE / _WINDOW


@dataclass(frozen=True)
class AmdConfig:
    max_human_greeting_s: float = 2.0
    after_greeting_silence_s: float = 0.8
    initial_silence_s: float = 4.0
    max_analysis_s: float = 6.0
    speech_above_floor_db: float = 12.0
    min_speech_dbfs: float = -48.0
    floor_window_s: float = 1.0
    voiced_flatness: float = 0.35
    min_voiced_fraction: float = 0.3
    min_utterance_s: float = 0.1
    beep_band_hz: tuple[float, float] = (400.0, 2600.0)
    beep_purity: float = 0.7
    beep_min_dbfs: float = -40.0
    beep_min_s: float = 0.12
    beep_drift_hz: float = 40.0
    words_grace_s: float = 1.5
    """With words: how long after a long greeting fell silent its words may still come."""
    max_wordless_greeting_s: float = 10.0
    """With words: a greeting still going this long (its words come when it pauses) is a
    machine's."""
    revise_within_s: float = 15.0
    """Machine words heard this long after answer still turn a human verdict to voicemail."""


_MACHINE_WORDS = re.compile(
    r"leave (me )?(a |your |an? )?(brief |short |detailed )?(message|voicemail|name)"
    r"|after the (tone|beep)|at the (tone|beep)|record your message|finished recording"
    r"|voice ?mail|mail ?box|answering machine|messaging system"
    r"|(not|un) ?available|can(no|')?t (come to|get to|answer|take)|cannot (come|take|answer)"
    r"|unable to (take|answer)|(missed|miss) your call|you('ve| have) reached"
    r"|(call|ring) you back|get back to you|return your call|call back during"
    r"|(away from|not at) (my|the) (desk|phone)|out of the office|(we are|we're|office is)"
    r" (currently )?closed|business hours|not (in|home|here) (right now|at the moment)"
    r"|nobody('s| is) home|you know what to do|state your name|press pound|please leave"
    r"|(?<!take a )(?<!take the )\bmessage\b",
)
_PERSON_WORDS = re.compile(
    r"\bspeaking\b|how (can|may) i help|what can i (do|help)|can i help|help you"
    r"|who('s| is) (this|calling|it)|who am i speaking|go ahead|\b\w+ here\b"
    r"|can you hear me|are you (there|calling|looking)|hold (on|for)|hang on|\?"
)


def words_say(text: str) -> AnsweredBy | None:
    """What a greeting's words say: VOICEMAIL for a machine's words (they win), HUMAN for
    a person's, None when they say neither."""
    lowered = " ".join(text.lower().replace("’", "'").split())
    if _MACHINE_WORDS.search(lowered):
        return AnsweredBy.VOICEMAIL
    if _PERSON_WORDS.search(lowered):
        return AnsweredBy.HUMAN
    return None


@dataclass(frozen=True)
class AmdVerdict:
    answered_by: AnsweredBy
    decided_after_s: float
    """Seconds of call audio (from answer) it took to decide."""
    reason: str


class AnsweringMachineDetector:
    """Feed the callee's audio from the moment of answer (and, with `hears_words`, the
    words of the greeting to `hear`); read `answered_by`."""

    def __init__(self, config: AmdConfig | None = None, *, hears_words: bool = False) -> None:
        self.config = config or AmdConfig()
        self.hears_words = hears_words
        self.verdict: AmdVerdict | None = None
        """The first verdict."""
        self.revised: AmdVerdict | None = None
        """A human verdict turned to voicemail by words heard later."""
        self.words = ""
        """What the speech-to-text heard of the greeting so far."""
        self._long_greeting_end: float | None = None
        self.beep_started_at_s: float | None = None
        self.beep_ended_at_s: float | None = None
        self.beep_hz: float | None = None
        self.last_speech_end_s: float | None = None
        """End of the latest utterance that was followed by the trailing silence."""
        self._pending = b""
        self._frames = 0
        self._previous = np.zeros(_FRAME, dtype=np.float64)
        self._levels: deque[float] = deque(
            maxlen=max(1, round(self.config.floor_window_s / _FRAME_S))
        )
        self._hann = np.hanning(_WINDOW)
        freqs = np.fft.rfftfreq(_WINDOW, 1 / _RATE)
        self._voice_band = (freqs >= 100) & (freqs <= 3800)
        low, high = self.config.beep_band_hz
        self._tone_band = np.flatnonzero((freqs >= low) & (freqs <= high))
        # the utterance being heard
        self._speech_start: float | None = None
        self._last_active = 0.0
        self._active = 0
        self._voiced = 0
        # the tone being heard
        self._tone_frames = 0
        self._tone_hz = 0.0
        self._tone_start = 0.0

    @property
    def elapsed_s(self) -> float:
        return self._frames * _FRAME_S

    @property
    def answered_by(self) -> AnsweredBy | None:
        """The verdict, upgraded to voicemail if a beep was heard after it."""
        if self.beep_started_at_s is not None or self.revised is not None:
            return AnsweredBy.VOICEMAIL
        return self.verdict.answered_by if self.verdict is not None else None

    @property
    def speaking(self) -> bool:
        """An utterance is under way (speech heard, not yet followed by the trailing silence)."""
        return self._speech_start is not None

    @property
    def beep_playing(self) -> bool:
        return self.beep_started_at_s is not None and self.beep_ended_at_s is None

    def feed(self, pcm: bytes) -> AmdVerdict | None:
        """Analyse more audio; returns the verdict, or its revision to voicemail (a beep
        after a human verdict), on the call that first reaches it."""
        data = self._pending + pcm
        usable = len(data) - len(data) % (2 * _FRAME)
        self._pending = data[usable:]
        decided: AmdVerdict | None = None
        for offset in range(0, usable, 2 * _FRAME):
            frame = np.frombuffer(data[offset : offset + 2 * _FRAME], dtype="<i2")
            before, revised = self.verdict, self.revised
            self._frame(frame.astype(np.float64))
            if before is None and self.verdict is not None:
                decided = self.verdict
            elif revised is None and self.revised is not None:
                decided = self.revised
        return decided

    def hear(self, text: str) -> AmdVerdict | None:
        """Words the speech-to-text heard from the callee; returns the verdict (or the
        revision to voicemail) they brought, if any."""
        if not text.strip() or self.elapsed_s > self.config.revise_within_s:
            return None
        self.words = f"{self.words} {text.strip()}".strip()
        said = words_say(self.words)
        if said is None:
            return None
        if self.verdict is None:
            self._set(said, f"the greeting's words ({self.words[:80]!r})")
            return self.verdict
        if (
            said is AnsweredBy.VOICEMAIL
            and self.verdict.answered_by is not AnsweredBy.VOICEMAIL
            and self.revised is None
        ):
            reason = (
                f"machine words after a {self.verdict.answered_by} verdict ({self.words[:80]!r})"
            )
            self.revised = AmdVerdict(AnsweredBy.VOICEMAIL, round(self.elapsed_s, 3), reason)
            return self.revised
        return None

    # -- one 20 ms frame -------------------------------------------------------------

    def _frame(self, samples: np.ndarray) -> None:
        cfg = self.config
        self._frames += 1
        now = self.elapsed_s
        rms = math.sqrt(float(np.mean(samples * samples)))
        level = 20 * math.log10(rms / 32768.0 + 1e-9)
        self._levels.append(level)
        floor = min(self._levels)

        window = np.concatenate((self._previous, samples)) * self._hann
        self._previous = samples
        power = np.abs(np.fft.rfft(window)) ** 2
        band = power[self._voice_band]
        total = float(band.sum()) + 1e-12
        flatness = float(np.exp(np.mean(np.log(band + 1e-12)))) / (total / len(band))
        peak = int(self._tone_band[int(np.argmax(power[self._tone_band]))])
        purity = float(power[peak - 2 : peak + 3].sum()) / total
        is_tone = purity >= cfg.beep_purity and level >= cfg.beep_min_dbfs
        self._track_tone(is_tone, peak * _BIN_HZ, now)

        active = (
            not is_tone
            and level >= cfg.min_speech_dbfs
            and level >= floor + cfg.speech_above_floor_db
        )
        if active:
            if self._speech_start is None:
                self._speech_start = now - _FRAME_S
                self._active = self._voiced = 0
            self._last_active = now
            self._active += 1
            self._voiced += flatness < cfg.voiced_flatness
        self._decide(now)

    def _track_tone(self, is_tone: bool, hz: float, now: float) -> None:
        cfg = self.config
        if is_tone and (self._tone_frames == 0 or abs(hz - self._tone_hz) <= cfg.beep_drift_hz):
            if self._tone_frames == 0:
                self._tone_start = now - _FRAME_S
                self._tone_hz = hz
            self._tone_frames += 1
            if self._tone_frames * _FRAME_S >= cfg.beep_min_s and self.beep_started_at_s is None:
                self.beep_started_at_s = self._tone_start
                self.beep_hz = self._tone_hz
                self._set(AnsweredBy.VOICEMAIL, f"beep at {self._tone_hz:.0f} Hz")
                self._revise(f"beep at {self._tone_hz:.0f} Hz")
            return
        if self.beep_playing:
            self.beep_ended_at_s = now - _FRAME_S
        self._tone_frames = 1 if is_tone else 0
        if is_tone:
            self._tone_start, self._tone_hz = now - _FRAME_S, hz

    def _decide(self, now: float) -> None:
        cfg = self.config
        start = self._speech_start
        if start is not None:
            speechlike = (
                self._active * _FRAME_S >= cfg.min_utterance_s
                and self._voiced >= cfg.min_voiced_fraction * self._active
            )
            length = self._last_active - start
            if now - self._last_active >= cfg.after_greeting_silence_s:
                self._speech_start = None
                if speechlike:
                    self.last_speech_end_s = self._last_active
                    if length <= cfg.max_human_greeting_s:
                        self._set(AnsweredBy.HUMAN, f"greeting of {length:.1f}s then silence")
                    elif self.hears_words and self._long_greeting_end is None:
                        self._long_greeting_end = self._last_active  # its words may follow
            elif speechlike and length > self._longest_greeting():
                self._set(AnsweredBy.VOICEMAIL, f"greeting longer than {self._longest_greeting()}s")
        waited = self._long_greeting_end
        if waited is not None and now - waited >= cfg.words_grace_s:
            # A machine says what it is; hanging up on a person costs more. Words late
            # (a busy machine) or a beep still turn this to voicemail.
            self._set(AnsweredBy.HUMAN, "a long greeting without a machine's words")
        if self.verdict is None:
            heard_nothing = start is None and self.last_speech_end_s is None
            if heard_nothing and now >= cfg.initial_silence_s:
                self._set(AnsweredBy.UNKNOWN, "no speech")
            elif now >= cfg.max_analysis_s and not (
                self.hears_words and (start is not None or waited is not None)
            ):  # (a greeting under way, or its words, still decide)
                self._set(AnsweredBy.UNKNOWN, "undecided")

    def _revise(self, reason: str) -> None:
        """A verdict other than voicemail turns to voicemail (once)."""
        verdict = self.verdict
        human = verdict is not None and verdict.answered_by is not AnsweredBy.VOICEMAIL
        if human and self.revised is None:
            self.revised = AmdVerdict(AnsweredBy.VOICEMAIL, round(self.elapsed_s, 3), reason)

    def _longest_greeting(self) -> float:
        """How long a greeting may run before its length alone says machine."""
        cfg = self.config
        return cfg.max_wordless_greeting_s if self.hears_words else cfg.max_human_greeting_s

    def _set(self, answered_by: AnsweredBy, reason: str) -> None:
        if self.verdict is None:
            self.verdict = AmdVerdict(answered_by, round(self.elapsed_s, 3), reason)
