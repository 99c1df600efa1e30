"""Fakes for testing the agent's neighbours without models (shipped, so users can too).

- `FakeEngines`: the `Engines` seam with a scripted STT (`FakeSTT`: each segment the
  VAD delimits "transcribes" to the next scripted line), a scripted LLM (`FakeLLM`:
  each user turn gets the next canned reply; it keeps the contexts it was given)
  and a TTS that makes a tone-and-buzz waveform whose length follows the words
  (`FakeTTS`, which keeps what it was asked to say). `llm_base_url` points the real
  OpenAI-compatible client at an endpoint instead.
- `EnergyVAD`: a VAD analyzer on signal energy, to drive pipecat's turn-taking
  from synthetic audio without the Silero model.

The project's own test harness (a fake OpenAI server, the scripted callee, the
labelled audio sets) lives in its `tests/support/`, not in the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import Frame, LLMContextFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings
from pipecat.utils.time import time_now_iso8601

from callfleet.agent.call_audio import SAMPLE_RATE
from callfleet.agent.options import DEFAULT_FALLBACK_LINE, AgentOptions, ProviderSettings
from callfleet.agent.providers.openai_llm import openai_compatible_llm
from callfleet.agent.providers.scripted_llm import ScriptedPolicy, say_as_llm
from callfleet.agent.providers.utterance_tts import UtteranceTTSService
from callfleet.agent.providers.whisper_stt import LatestSegmentFinal
from callfleet.synth import speech_like

__all__ = [
    "EnergyVAD",
    "FakeEngines",
    "FakeLLM",
    "FakeSTT",
    "FakeTTS",
]


# -- fake engines ----------------------------------------------------------------------


class FakeSTT(LatestSegmentFinal):
    """Each speech segment becomes the next of `lines` (then nothing)."""

    def __init__(self, lines: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("ttfs_p99_latency", 0.5)
        super().__init__(settings=STTSettings(model="fake", language="en"), **kwargs)
        self._lines = list(lines)
        self.segments: list[float] = []

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        self.segments.append(len(audio) / (2 * self.sample_rate))
        if self._lines:
            yield TranscriptionFrame(self._lines.pop(0), "", time_now_iso8601(), None)


class FakeTTS(UtteranceTTSService):
    """A voice-like buzz of 0.3 s per word; `spoken` lists the texts it was asked to say."""

    def __init__(
        self, *, seconds_per_word: float = 0.3, delay_s: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(voice="fake", **kwargs)
        self.seconds_per_word = seconds_per_word
        self.delay_s = delay_s
        """How long each utterance takes to synthesise (a busy machine's Piper)."""
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.spoken.append(text)
        seconds = max(0.3, self.seconds_per_word * len(text.split()))
        return speech_like(round(seconds, 2), seed=len(self.spoken), level=0.25), SAMPLE_RATE


class FakeLLM(FrameProcessor):
    """Answers each user turn with the next reply; `contexts` keeps the messages it saw."""

    def __init__(self, replies: Sequence[str]) -> None:
        super().__init__(name="fake-llm")
        self._replies = list(replies)
        self.contexts: list[list[Any]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.contexts.append(list(frame.context.get_messages()))
            if self._replies:
                await say_as_llm(self, self._replies.pop(0))
        else:
            await self.push_frame(frame, direction)


@dataclass
class FakeEngines:
    """`Engines` with scripted parts. `llm_replies=None` uses the real scripted policy."""

    stt_lines: Sequence[str] = ()
    llm_replies: Sequence[str] | None = None
    llm_base_url: str | None = None
    """Set to use the real OpenAI-compatible client against this endpoint."""
    llm_timeout_s: float = 10.0
    llm_fallback_line: str = DEFAULT_FALLBACK_LINE
    seconds_per_word: float = 0.3
    tts_delay_s: float = 0.0
    stts: list[FakeSTT] = field(default_factory=list)
    ttss: list[FakeTTS] = field(default_factory=list)
    llms: list[FakeLLM] = field(default_factory=list)
    prepared: list[AgentOptions] = field(default_factory=list)
    """The options of each call it was asked to prepare audio for (while ringing)."""

    @property
    def model_label(self) -> str:
        if self.llm_base_url:
            return "fake-openai"
        return "scripted" if self.llm_replies is None else "fake"

    def prepare(self, options: AgentOptions) -> None:
        self.prepared.append(options)

    def stt(self, options: AgentOptions) -> FrameProcessor:
        stt = FakeSTT(self.stt_lines)
        self.stts.append(stt)
        return stt

    def tts(self, options: AgentOptions) -> FrameProcessor:
        tts = FakeTTS(
            seconds_per_word=self.seconds_per_word,
            delay_s=self.tts_delay_s,
            pronunciation=options.pronunciation,
        )
        self.ttss.append(tts)
        return tts

    def llm(self, options: AgentOptions) -> FrameProcessor:
        if self.llm_base_url:
            settings = ProviderSettings(
                llm_base_url=self.llm_base_url,
                llm_model="fake-openai",
                llm_timeout_s=self.llm_timeout_s,
                llm_fallback_line=self.llm_fallback_line,
            )
            return openai_compatible_llm(settings, options)
        if self.llm_replies is None:
            return ScriptedPolicy(lines=options.script, closing_line=options.closing_line)
        llm = FakeLLM(self.llm_replies)
        self.llms.append(llm)
        return llm


class EnergyVAD(VADAnalyzer):
    """Voice confidence from the level of 20 ms windows: loud is speech.

    A window counts as speech if any of the last 100 ms was loud, bridging the
    short gaps between syllables as a voice detector does.
    """

    def __init__(self, params: VADParams | None = None, *, threshold_dbfs: float = -40.0) -> None:
        # the level is the whole criterion here, so pipecat's own volume gate is off
        params = (params or VADParams()).model_copy(update={"min_volume": 0.0})
        super().__init__(sample_rate=None, params=params)
        self._threshold = threshold_dbfs
        self._recent: list[bool] = []

    def num_frames_required(self) -> int:
        return int(self.sample_rate * 0.02)

    def voice_confidence(self, buffer: bytes) -> float:
        samples = np.frombuffer(buffer[: len(buffer) & ~1], dtype="<i2").astype(np.float64)
        if samples.size == 0:
            return 0.0
        level = 20 * np.log10(np.sqrt(np.mean(samples * samples)) / 32768.0 + 1e-9)
        self._recent = [*self._recent[-4:], bool(level > self._threshold)]
        return 1.0 if any(self._recent) else 0.0
