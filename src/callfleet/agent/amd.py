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

Nothing heard for `initial_silence_s`, or no decision by `max_analysis_s` (noise,
mumbling), gives `unknown`. The verdict never waits for more than the greeting
plus its trailing silence, which is about when the agent's end-of-turn detector
would let it speak anyway, so detection does not delay the agent's first words.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from callfleet.telephony.carrier import AnsweredBy

__all__ = ["AmdConfig", "AmdVerdict", "AnsweringMachineDetector"]

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


@dataclass(frozen=True)
class AmdVerdict:
    answered_by: AnsweredBy
    decided_after_s: float
    """Seconds of call audio (from answer) it took to decide."""
    reason: str


class AnsweringMachineDetector:
    """Feed the callee's audio from the moment of answer; read `verdict`."""

    def __init__(self, config: AmdConfig | None = None) -> None:
        self.config = config or AmdConfig()
        self.verdict: AmdVerdict | None = None
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
        if self.beep_started_at_s is not None:
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
        """Analyse more audio; returns the verdict on the call that first reaches it."""
        data = self._pending + pcm
        usable = len(data) - len(data) % (2 * _FRAME)
        self._pending = data[usable:]
        decided: AmdVerdict | None = None
        for offset in range(0, usable, 2 * _FRAME):
            frame = np.frombuffer(data[offset : offset + 2 * _FRAME], dtype="<i2")
            before = self.verdict
            self._frame(frame.astype(np.float64))
            if before is None and self.verdict is not None:
                decided = self.verdict
        return decided

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
            if now - self._last_active >= cfg.after_greeting_silence_s:
                self._speech_start = None
                if speechlike:
                    self.last_speech_end_s = self._last_active
                    length = self._last_active - start
                    if length <= cfg.max_human_greeting_s:
                        self._set(AnsweredBy.HUMAN, f"greeting of {length:.1f}s then silence")
            elif self._last_active - start > cfg.max_human_greeting_s and speechlike:
                self._set(AnsweredBy.VOICEMAIL, f"greeting longer than {cfg.max_human_greeting_s}s")
        if self.verdict is None:
            heard_nothing = start is None and self.last_speech_end_s is None
            if heard_nothing and now >= cfg.initial_silence_s:
                self._set(AnsweredBy.UNKNOWN, "no speech")
            elif now >= cfg.max_analysis_s:
                self._set(AnsweredBy.UNKNOWN, "undecided")

    def _set(self, answered_by: AnsweredBy, reason: str) -> None:
        if self.verdict is None:
            self.verdict = AmdVerdict(answered_by, round(self.elapsed_s, 3), reason)
