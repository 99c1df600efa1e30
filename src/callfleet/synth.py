"""Synthetic telephone audio: no files, no models, deterministic.

The simulated phones make these sounds, and the agent's fake TTS (`agent.testing`)
speaks them, so the module sits at the bottom of the layers, beside `wavfile`.

Everything is 8 kHz 16-bit signed little-endian mono PCM, the format the RTP layer
(`callfleet.telephony.rtp`) sends and hands back. A person answering says a short
"hello?" followed by a pause, then talks in bursts separated by silences; a
voicemail greeting is a longer stretch of continuous speech-like sound followed by
a 1 kHz beep. The "speech" is a harmonic source with a wandering pitch, two
formant-like peaks and a syllable envelope: it has the energy and rhythm a VAD or
an answering-machine detector keys on, without being words.

The simulator's people speak real words (`callfleet.simulator.voices`); these
sounds remain for tests that need a voice without words, and are what the people
fall back to without espeak-ng.

`Playlist` plays segments in order (then loops a tail, or stays silent) and reports
each segment's end, so the simulator knows when its beep has finished. `tone_level`
(Goertzel), `tone_purity` and `rms` let tests and tools measure what was heard.
"""

from __future__ import annotations

import array
import math
import random
import sys
import wave
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

__all__ = [
    "FRAME_BYTES",
    "SAMPLE_RATE",
    "Playlist",
    "beep",
    "human_chatter",
    "human_hello",
    "rms",
    "silence",
    "speech_like",
    "tone",
    "tone_level",
    "tone_purity",
    "voicemail_greeting",
    "warm_up",
    "write_wav",
]

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
FRAME_BYTES = 2 * FRAME_SAMPLES
_FULL_SCALE = 32767
_GREETING_BASE_S = 6.0


def _frames(seconds: float) -> int:
    """Whole 20 ms frames in `seconds` (at least zero)."""
    return max(0, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))


def _pack(samples: Sequence[float]) -> bytes:
    out = array.array("h", (max(-_FULL_SCALE, min(_FULL_SCALE, int(s))) for s in samples))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def _unpack(pcm: bytes) -> array.array[int]:
    out = array.array("h")
    out.frombytes(pcm[: len(pcm) & ~1])
    if sys.byteorder == "big":
        out.byteswap()
    return out


def silence(seconds: float) -> bytes:
    return bytes(_frames(seconds) * FRAME_BYTES)


@cache
def tone(freq_hz: float, seconds: float, *, level: float = 0.3) -> bytes:
    """A sine at `level` of full scale, with 5 ms ramps so it starts and stops cleanly."""
    n = _frames(seconds) * FRAME_SAMPLES
    ramp = SAMPLE_RATE // 200
    amp = level * _FULL_SCALE
    step = 2 * math.pi * freq_hz / SAMPLE_RATE
    return _pack([amp * min(1.0, i / ramp, (n - i) / ramp) * math.sin(step * i) for i in range(n)])


def beep(seconds: float = 0.5) -> bytes:
    """The answering machine's "leave your message after the tone": 1 kHz."""
    return tone(1000.0, seconds, level=0.35)


@cache
def speech_like(seconds: float, *, seed: int = 0, level: float = 0.2) -> bytes:
    """Continuous speech-like sound: syllables of a harmonic voice with a drifting pitch."""
    rng = random.Random(seed)
    n = _frames(seconds) * FRAME_SAMPLES
    samples = [0.0] * n
    amp = level * _FULL_SCALE
    pos = 0
    while pos < n:
        length = int(SAMPLE_RATE * rng.uniform(0.12, 0.26))
        gap = int(SAMPLE_RATE * rng.uniform(0.02, 0.08))
        if rng.random() < 0.12:  # a breath between phrases
            gap += int(SAMPLE_RATE * rng.uniform(0.15, 0.35))
        f0 = rng.uniform(105.0, 165.0)
        glide = rng.uniform(-25.0, 25.0)
        formants = (rng.uniform(450.0, 800.0), rng.uniform(1100.0, 1900.0))
        weights = [
            sum(math.exp(-((((k * f0) - f) / 220.0) ** 2)) for f in formants) + 0.15 / k
            for k in range(1, 13)
        ]
        end = min(n, pos + length)
        phase = 0.0
        for i in range(pos, end):
            t = (i - pos) / max(1, length)
            freq = f0 + glide * t
            phase += 2 * math.pi * freq / SAMPLE_RATE
            envelope = math.sin(math.pi * t) ** 2
            value = 0.0
            for k, w in enumerate(weights, start=1):
                if k * freq < 3400.0:
                    value += w * math.sin(k * phase)
            samples[i] = amp * envelope * value / 2.2
        pos = end + gap
    return _pack(samples)


def human_hello() -> bytes:
    """A short "hello?" and the pause after it: what a person says on picking up."""
    return speech_like(0.5, seed=1, level=0.22) + silence(1.5)


@cache
def human_chatter() -> bytes:
    """About 12 s of talk bursts and pauses; a person's side of a conversation, looped."""
    rng = random.Random(7)
    parts: list[bytes] = []
    for turn in range(4):
        parts.append(speech_like(round(rng.uniform(1.0, 2.2), 2), seed=10 + turn, level=0.18))
        parts.append(silence(round(rng.uniform(1.2, 2.4), 2)))
    return b"".join(parts)


def voicemail_greeting(seconds: float) -> bytes:
    """A greeting of `seconds` of continuous speech (with the usual short pauses)."""
    base = speech_like(_GREETING_BASE_S, seed=2, level=0.22)
    size = _frames(seconds) * FRAME_BYTES
    return (base * (size // len(base) + 1))[:size]


def warm_up() -> None:
    """Synthesise the cached clips now (about 0.2 s of CPU) rather than on a first call."""
    human_hello()
    human_chatter()
    voicemail_greeting(0.02)
    beep()


def rms(pcm: bytes) -> float:
    """Root-mean-square level of the PCM as a fraction of full scale (0..1)."""
    samples = _unpack(pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / _FULL_SCALE


def tone_level(pcm: bytes, freq_hz: float) -> float:
    """Goertzel: the amplitude of `freq_hz` in the PCM as a fraction of full scale."""
    samples = _unpack(pcm)
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq_hz / SAMPLE_RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(0.0, power)) / n / _FULL_SCALE


def tone_purity(pcm: bytes, freq_hz: float) -> float:
    """How much of the PCM's energy is the tone `freq_hz`: 1.0 for a pure sine, 0 for silence.

    Speech-like sound stays below about 0.45 at any 20 ms frame; the beep is ~1.0.
    """
    level = rms(pcm)
    if level < 1e-4:
        return 0.0
    return min(1.0, tone_level(pcm, freq_hz) / (level * math.sqrt(2)))


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)


class Playlist:
    """An `AudioSource`: plays `segments` in order, then loops `then` (or stays silent).

    `on_mark(label)` is called when the last frame of a segment has been read, i.e.
    when that segment has just been sent.
    """

    def __init__(
        self,
        segments: Sequence[tuple[str, bytes]],
        *,
        then: bytes | None = None,
        on_mark: Callable[[str], None] | None = None,
    ) -> None:
        self._segments = [(label, pcm) for label, pcm in segments]
        self._then = then or None
        self._pos = 0
        self._index = 0
        self.on_mark = on_mark

    @property
    def finished(self) -> bool:
        """All segments have been played (a looping tail may still be playing)."""
        return self._index >= len(self._segments)

    def read(self) -> bytes | None:
        while self._index < len(self._segments):
            label, pcm = self._segments[self._index]
            if self._pos < len(pcm):
                frame = pcm[self._pos : self._pos + FRAME_BYTES]
                self._pos += FRAME_BYTES
                if self._pos >= len(pcm):
                    self._next_segment(label)
                return frame.ljust(FRAME_BYTES, b"\x00")
            self._next_segment(label)
        if self._then is None:
            return None
        frame = self._then[self._pos : self._pos + FRAME_BYTES]
        self._pos += FRAME_BYTES
        if self._pos >= len(self._then):
            self._pos = 0
        return frame.ljust(FRAME_BYTES, b"\x00")

    def _next_segment(self, label: str) -> None:
        self._index += 1
        self._pos = 0
        if self.on_mark is not None:
            self.on_mark(label)
