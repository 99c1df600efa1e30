"""`UtteranceTTSService`: a pipecat TTS service for engines that return a whole utterance.

Piper's command line and espeak-ng synthesise a sentence at a time, faster than
real time (Piper ~14x, espeak ~150x on this machine), so streaming inside a
sentence would gain little. A subclass implements `synthesize(text)`, returning
16-bit mono PCM and its sample rate; this class rewrites the text with the call's
pronunciation guide, converts the audio to the pipeline's output rate in one
piece (a one-shot resampler, so no tail of one sentence lingers into the next),
drops the quiet a voice puts before its first sound (Piper's is 40-60 ms: time the
callee would wait for nothing) and hands it to pipecat, which splits it into 40 ms
chunks for the transport.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

import numpy as np
from pipecat.audio.utils import create_file_resampler
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from callfleet.agent.providers.ready_audio import ReadyAudio, sentences

__all__ = [
    "UtteranceTTSService",
    "apply_pronunciation",
    "speakable",
    "spoken_lines",
    "trim_leading_quiet",
]

_WORD = re.compile(r"[A-Za-z0-9]")
_SILENT_CONTEXT_S = 20.0
_ONSET = 328
"""A sample this loud (1 % of full scale, -40 dBFS) is the voice's first sound."""
_KEEP_BEFORE_ONSET_S = 0.01


def trim_leading_quiet(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM without the quiet before its first sound (10 ms of it kept, so
    the onset is not clipped); unchanged when nothing in it is loud."""
    samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= _ONSET)
    if not len(loud):
        return pcm
    start = max(0, int(loud[0]) - int(rate * _KEEP_BEFORE_ONSET_S))
    return pcm[start * 2 :] if start else pcm


def speakable(text: str) -> str | None:
    """The text on one line, or None when there is nothing to pronounce in it."""
    line = " ".join(text.split())
    return line if _WORD.search(line) else None


def apply_pronunciation(text: str, guide: Sequence[tuple[str, str]]) -> str:
    """Replace each guide word (whole words, any case) with how it should be said.

    The replacement is literal text (a function, not a template): a tenant's `\\1` or
    `\\g<0>` is said as written, never expanded."""
    for word, spoken in guide:
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
        text = pattern.sub(_literal(spoken), text)
    return text


def spoken_lines(lines: Iterable[str], guide: Sequence[tuple[str, str]]) -> list[str]:
    """What a TTS service will be asked to synthesise for these lines: each whole (as a
    `TTSSpeakFrame` says it) and each of its sentences (as an LLM's reply arrives)."""
    out: list[str] = []
    for text in lines:
        line = speakable(apply_pronunciation(text, guide))
        if line is None:
            continue
        for part in [line, *sentences(line)]:
            if part not in out:
                out.append(part)
    return out


def _literal(spoken: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: spoken


class UtteranceTTSService(TTSService):
    def __init__(
        self,
        *,
        voice: str,
        pronunciation: Sequence[tuple[str, str]] = (),
        ready: ReadyAudio | None = None,
        **kwargs: Any,
    ) -> None:
        """`ready`: lines synthesised ahead (while the call rang), asked first."""
        self._ready = ready
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            # pipecat ends a turn's audio as "silent" after this long without a frame.
            # A whole sentence comes as one frame, after a shared Piper has served the
            # other calls' sentences queued before it: give it time (the normal end of
            # a turn is signalled explicitly, not by this timeout).
            stop_frame_timeout_s=_SILENT_CONTEXT_S,
            # Frames that follow an utterance wait until its audio has gone out, so
            # an EndFrame after the last words (a closing line, a voicemail message)
            # cannot overtake a sentence that is still being synthesised.
            pause_frame_processing=True,
            settings=TTSSettings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._pronunciation = tuple(pronunciation)
        self._one_shot = create_file_resampler()

    def can_generate_metrics(self) -> bool:
        return True

    @abstractmethod
    async def synthesize(self, text: str) -> tuple[bytes, int]:
        """16-bit mono PCM for one line of text, and its sample rate."""

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        line = speakable(apply_pronunciation(text, self._pronunciation))
        if line is None:
            return
        await self.start_tts_usage_metrics(text)
        try:
            prepared = await self._ready.take(line) if self._ready is not None else None
            pcm, rate = prepared or await self.synthesize(line)
            if rate != self.sample_rate:
                pcm = await self._one_shot.resample(pcm, rate, self.sample_rate)
            pcm = trim_leading_quiet(pcm, self.sample_rate)
        except Exception as exc:  # a voice failure must not end the call
            yield ErrorFrame(error=f"speech synthesis failed: {exc}")
            return
        finally:
            await self.stop_ttfb_metrics()
        if pcm:
            yield TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)
