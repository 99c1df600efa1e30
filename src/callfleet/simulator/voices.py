"""The simulated people's voices: lines spoken by espeak-ng, and taking turns on a call.

`render(text, voice)` runs the `espeak-ng` program (a child process: it is GPL and
never linked in), resamples its 22.05 kHz output to the phone's 8 kHz with a
Kaiser-windowed sinc (`resample`), trims the silence around the words and caches
the result per (text, voice) in the process. `speak` does the same off the event
loop. Without espeak-ng every line becomes the speech-like noise of
`callfleet.simulator.audio`, of about the length the words would take, and a
warning is logged once.

`Conversation` is a person on the line: an `AudioSource` the RTP session reads
every 20 ms, fed the caller's audio through `hear()` on the same clock. It says its
greeting, then takes turns: an energy VAD on the caller's frames (our agent's
audio is clean TTS, so a fixed level works) finds the caller's talk spurts, and
once one is followed by `end_of_turn_s` of quiet the next line is said. It never
starts a line while the caller is talking. For every line it measures the delay
from the last frame it sent to the first frame of the caller's speech after it
(`latencies_ms`), timed at the caller audio's arrival: the caller's own receive
buffer counts, ours does not. With a barge-in line it talks over the caller's
first long spurt and measures how long the caller took to fall quiet
(`barge_in_stop_ms`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import subprocess
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from callfleet.simulator import audio
from callfleet.wavfile import parse_wav

__all__ = [
    "DEFAULT_VOICE",
    "FRAME_S",
    "SPEECH_DBFS",
    "Conversation",
    "TurnTaking",
    "Utterance",
    "espeak_available",
    "render",
    "resample",
    "speak",
    "speak_all",
]

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us"
WORDS_PER_MINUTE = 160
FRAME_S = audio.FRAME_SAMPLES / audio.SAMPLE_RATE
_FULL_SCALE = 32768.0
_PEAK = 0.6
"""Renders are scaled to this peak (of full scale): a normal phone level, never clipping."""
SPEECH_DBFS = -40.0
"""A 20 ms frame at or above this RMS level is speech. Renders are trimmed to their
first and last such frame, so a line's last frame sent is the end of its speech."""
_FADE_SAMPLES = 40
_CACHE_SIZE = 512
_ESPEAK_TIMEOUT_S = 30.0

Samples = npt.NDArray[np.float64]

_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_cache_lock = threading.Lock()
_key_locks: dict[tuple[str, str], threading.Lock] = {}


# -- rendering ---------------------------------------------------------------------------


@cache
def _espeak() -> str | None:
    path = shutil.which("espeak-ng")
    if path is None:
        log.warning(
            "espeak-ng is not installed (apt-get install espeak-ng): the simulated people "
            "will speak speech-like noise instead of words"
        )
    return path


def espeak_available() -> bool:
    return _espeak() is not None


def render(text: str, voice: str = DEFAULT_VOICE) -> bytes:
    """`text` spoken by `voice` as 8 kHz 16-bit mono PCM in whole 20 ms frames (blocking).

    Cached per (text, voice); concurrent renders of the same line run espeak once.
    """
    key = (text, voice)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is None:
            hit = _synthesise(text, voice)
            with _cache_lock:
                _cache[key] = hit
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
                _key_locks.pop(key, None)
    return hit


async def speak(text: str, voice: str = DEFAULT_VOICE) -> bytes:
    """`render`, off the event loop unless the line is already cached."""
    with _cache_lock:
        hit = _cache.get((text, voice))
    if hit is not None:
        return hit
    return await asyncio.to_thread(render, text, voice)


async def speak_all(texts: Sequence[str], voice: str = DEFAULT_VOICE) -> dict[str, bytes]:
    """Render several lines at once (in parallel threads); text -> PCM."""
    pcms = await asyncio.gather(*(speak(text, voice) for text in texts))
    return dict(zip(texts, pcms, strict=True))


def _synthesise(text: str, voice: str) -> bytes:
    program = _espeak()
    if program is None:
        return _noise_for(text)
    argv = [program, "-v", voice, "-s", str(WORDS_PER_MINUTE), "--stdout", "--", text]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_ESPEAK_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode("utf-8", "replace").strip())
        samples, rate = _parse_wav(done.stdout)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        log.warning("espeak-ng could not say %r with %s (%s); using noise", text, voice, exc)
        return _noise_for(text)
    return _to_phone(resample(samples, rate, audio.SAMPLE_RATE))


def _noise_for(text: str) -> bytes:
    """Speech-like noise about as long as `text` takes to say (~0.32 s a word)."""
    seconds = round(min(8.0, max(0.4, 0.32 * len(text.split()))), 2)
    return audio.speech_like(seconds, seed=zlib.crc32(text.encode()) % 10_000, level=0.22)


def _parse_wav(data: bytes) -> tuple[Samples, int]:
    """Samples and rate of espeak-ng's 16-bit mono WAV."""
    pcm, rate = parse_wav(data)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64), rate


def _to_phone(samples: Samples) -> bytes:
    """Level, trim to the frames with speech (with short fades), pack as 16-bit PCM."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak <= 0.0:
        return b""
    x = samples * (_PEAK * _FULL_SCALE / peak)
    n = audio.FRAME_SAMPLES
    x = np.concatenate((x, np.zeros(-len(x) % n)))
    frames = x.reshape(-1, n)
    level = np.sqrt(np.mean(frames * frames, axis=1)) / _FULL_SCALE
    loud = np.flatnonzero(level >= 10 ** (SPEECH_DBFS / 20))
    if loud.size == 0:
        return b""
    x = frames[loud[0] : loud[-1] + 1].reshape(-1).copy()
    ramp = np.linspace(0.0, 1.0, _FADE_SAMPLES, endpoint=False)
    x[:_FADE_SAMPLES] *= ramp
    x[-_FADE_SAMPLES:] *= ramp[::-1]
    return np.clip(np.round(x), -32767, 32767).astype("<i2").tobytes()


def resample(
    samples: npt.ArrayLike,
    from_rate: int,
    to_rate: int,
    *,
    zero_crossings: int = 16,
    rolloff: float = 0.92,
    beta: float = 8.0,
) -> Samples:
    """Band-limited resampling between two integer rates (of a modest ratio, like 160/441).

    Each output sample is the input convolved with a sinc low-pass at `rolloff` of
    the lower Nyquist frequency, `zero_crossings` lobes each side, shaped by a
    Kaiser window (`beta` 8: about 80 dB of stop band), and normalised to unity gain
    at DC. The ratio `up/down` in lowest terms repeats every `up` outputs, which take
    the same `down` inputs forward, so the filter is one `(down + taps) x up` matrix
    applied to every stretch of input in a single product.
    """
    x = np.asarray(samples, dtype=np.float64)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError("sample rates must be positive")
    if from_rate == to_rate or x.size == 0:
        return x.copy()
    common = math.gcd(from_rate, to_rate)
    up, down = to_rate // common, from_rate // common
    if up > _MAX_PHASES:
        raise ValueError(f"{from_rate} -> {to_rate} Hz needs {up} filter phases")
    weights = _polyphase(up, down, zero_crossings, rolloff, beta)
    width = weights.shape[0]
    half = (width - down) // 2
    count = (x.size * up + down - 1) // down
    blocks = (count + up - 1) // up
    padded = np.zeros((blocks - 1) * down + width)
    padded[half : half + x.size] = x
    stretches = np.lib.stride_tricks.sliding_window_view(padded, width)[::down][:blocks]
    out: Samples = (np.ascontiguousarray(stretches) @ weights).reshape(-1)[:count]
    return out


_MAX_PHASES = 2000


@cache
def _polyphase(up: int, down: int, zero_crossings: int, rolloff: float, beta: float) -> Samples:
    """Column r: the weights of output `r` of a stretch over its `down + 2 * half` inputs."""
    cutoff = 0.5 * min(1.0, up / down) * rolloff  # cycles per input sample
    half = math.ceil(zero_crossings / (2 * cutoff))  # kernel half-width, in input samples
    offsets = np.arange(-half + 1, half + 1)
    position = np.arange(up) * down
    base, frac = position // up, (position % up) / up
    distance = frac[:, None] - offsets[None, :]  # from each output to its taps
    window = np.i0(beta * np.sqrt(np.clip(1 - (distance / half) ** 2, 0.0, None))) / np.i0(beta)
    kernel = 2 * cutoff * np.sinc(2 * cutoff * distance) * window
    kernel /= kernel.sum(axis=1, keepdims=True)
    matrix = np.zeros((up, down + 2 * half))
    columns = base[:, None] + offsets[None, :] + half
    np.put_along_axis(matrix, columns, kernel, axis=1)
    weights: Samples = np.ascontiguousarray(matrix.T)  # contiguous for the product
    weights.setflags(write=False)
    return weights


# -- turn taking ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """A line and its audio (8 kHz 16-bit PCM)."""

    text: str
    pcm: bytes


@dataclass(frozen=True)
class TurnTaking:
    speech_dbfs: float = SPEECH_DBFS
    """A received 20 ms frame at or above this RMS level is the caller speaking."""
    end_of_turn_s: float = 0.8
    """Quiet after the caller's speech that ends their turn (the VAD's hangover)."""
    barge_in_after_s: float = 1.2
    """How far into the caller's first long spurt a barge-in line starts."""
    pickup_pause_s: float = 0.3
    """Silence between picking up and the greeting."""


class Conversation:
    """A person on the line: `read()` is what they say, `hear()` what the caller sends.

    Both are called once per 20 ms tick (as `RtpSession` does); `clock` gives the
    time of each call, in seconds.
    """

    def __init__(
        self,
        greeting: Utterance | None,
        lines: Sequence[Utterance] = (),
        *,
        barge_in: Utterance | None = None,
        options: TurnTaking | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options or TurnTaking()
        self.said: list[str] = []
        """The lines started, in order."""
        self.latencies_ms: list[float] = []
        """Per line said: from its last frame sent to the caller's next speech onset."""
        self.barge_in_stop_ms: float | None = None
        """From the barge-in line's first frame to the caller falling quiet."""
        self.caller_turns = 0
        """The caller's talk spurts that have ended."""
        self._clock = clock
        self._greeting = greeting
        self._lines = deque(lines)
        self._barge_in = barge_in
        self._threshold = (10 ** (self.options.speech_dbfs / 20) * _FULL_SCALE) ** 2
        self._pause_frames = round(self.options.pickup_pause_s / FRAME_S)
        self._playing: Utterance | None = None
        self._pos = 0
        self._hushed = False
        self._owe_reply = False
        self._measure_from: float | None = None
        self._barge_onset: float | None = None
        self._talking = False
        self._spurt_start = 0.0
        self._last_speech = 0.0
        self._loud_played_at = -math.inf

    @property
    def speaking(self) -> bool:
        return self._playing is not None

    @property
    def caller_talking(self) -> bool:
        """The caller's talk spurt is under way (speech, not yet `end_of_turn_s` of quiet)."""
        return self._talking

    @property
    def finished(self) -> bool:
        """Everything in the script has been said."""
        idle = self._playing is None and self._greeting is None
        return idle and not self._lines and self._barge_in is None

    def under_way(self, quiet_s: float) -> bool:
        """Whether hanging up now would cut the talk short: we are speaking (or about to
        greet), the caller is talking or a reply to them is due, the caller has had less
        than `quiet_s` to answer our last line, or they have joined in and either we have
        lines left or they spoke within the last `quiet_s`."""
        if self._hushed:
            return False
        if self._playing is not None or self._greeting is not None or self._talking:
            return True
        if self._owe_reply and self._lines:
            return True
        now = self._clock()
        if self._measure_from is not None and now - self._measure_from < quiet_s:
            return True
        if not self.caller_turns:
            return False
        return bool(self._lines) or now - self._last_speech < quiet_s

    def hush(self) -> None:
        """Stop talking now and say nothing more (the call was transferred)."""
        self._hushed = True
        self._playing = None

    # -- speaking ------------------------------------------------------------------------

    def read(self) -> bytes | None:
        if self._hushed:
            return None
        now = self._clock()
        if self._playing is None:
            nxt = self._next(now)
            if nxt is None:
                return None
            self._playing, self._pos = nxt, 0
            self.said.append(nxt.text)
        utterance = self._playing
        frame = utterance.pcm[self._pos : self._pos + audio.FRAME_BYTES]
        self._pos += audio.FRAME_BYTES
        if self._pos >= len(utterance.pcm):
            self._finished_line(now)
        return frame.ljust(audio.FRAME_BYTES, b"\x00")

    def _next(self, now: float) -> Utterance | None:
        if self._pause_frames > 0:
            self._pause_frames -= 1
            return None
        if self._greeting is not None:
            greeting, self._greeting = self._greeting, None
            return greeting if greeting.pcm else None
        barge_in = self._barge_in
        due = now - self._spurt_start >= self.options.barge_in_after_s - 1e-9
        audible = now - self._loud_played_at <= 2 * FRAME_S + 1e-9  # not in a pause
        if barge_in is not None and self._talking and due and audible:
            self._barge_in = None
            self._barge_onset = now
            return barge_in
        if self._owe_reply and not self._talking and self._lines:
            self._owe_reply = False
            return self._lines.popleft()
        return None

    def _finished_line(self, now: float) -> None:
        self._playing = None
        self._owe_reply = False  # we spoke last
        # If the caller is already talking over us, this turn has no response latency.
        self._measure_from = None if self._talking else now

    # -- listening -----------------------------------------------------------------------

    def hear(self, frame: bytes, *, age_s: float = 0.0) -> None:
        """The caller's next 20 ms; `age_s` is how long ago it arrived (our jitter buffer).

        Timings are taken at arrival, so our own playout delay is not counted
        against the caller.
        """
        played = self._clock()
        now = played - age_s
        samples = np.frombuffer(frame[: len(frame) & ~1], dtype="<i2").astype(np.float64)
        loud = samples.size > 0 and float(np.dot(samples, samples)) / samples.size >= (
            self._threshold
        )
        if loud:
            if not self._talking:
                self._talking = True
                self._spurt_start = now
                if self._measure_from is not None:
                    self.latencies_ms.append(round((now - self._measure_from) * 1000, 1))
                    self._measure_from = None
            self._last_speech = now
            self._loud_played_at = played
        elif self._talking and now - self._last_speech >= self.options.end_of_turn_s - 1e-9:
            self._spurt_ended()

    def _spurt_ended(self) -> None:
        self._talking = False
        self.caller_turns += 1
        if self._playing is None:
            self._owe_reply = True
        if self._barge_onset is not None and self.barge_in_stop_ms is None:
            quiet_from = self._last_speech + FRAME_S
            self.barge_in_stop_ms = round(max(0.0, quiet_from - self._barge_onset) * 1000, 1)
