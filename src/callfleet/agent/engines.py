"""`Engines`: the seam between a call's pipeline and the STT, TTS and LLM behind it.

An `Engines` object lives as long as the process and hands each call fresh
pipecat services built on shared, loaded models. `LocalEngines` is the real one:
faster-whisper tiny.en (loaded once, two workers) and Piper in two child processes
(or espeak-ng), each shared by every call through a `FairPool` (what a callee waits
for first, calls in turn), and an OpenAI-compatible LLM when an endpoint is
configured, else the scripted policy. `callfleet.agent.testing.FakeEngines` is the
fake for unit tests.

| setting (`ProviderSettings`) | value         | service                                       |
| ---------------------------- | ------------- | --------------------------------------------- |
| `stt`                        | whisper-local | `LocalWhisperSTT` (tiny.en, in process)       |
| `tts`                        | piper-local   | `PiperTTS` (Piper joe voice, child processes) |
|                              | espeak        | `EspeakTTS` (espeak-ng program)               |
| `llm_base_url`               | unset         | `ScriptedPolicy` (`model: "scripted"`)        |
|                              | a URL         | `OpenAILLMService` against that endpoint      |

|                              | deepgram, openai | hosted STT (`providers/hosted.py`)   |
|                              | openai, elevenlabs, cartesia | hosted TTS               |

A provider that is not known, or a hosted one without its API key, raises
`ValueError` at construction (start-up), naming what to set.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import structlog

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.processors.frame_processor import FrameProcessor

from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.providers.espeak_tts import EspeakTTS, espeak_path
from callfleet.agent.providers.fair_pool import Priority
from callfleet.agent.providers.hosted import (
    HOSTED_STT,
    HOSTED_TTS,
    check_hosted,
    hosted_stt,
    hosted_tts,
)
from callfleet.agent.providers.openai_llm import openai_compatible_llm
from callfleet.agent.providers.piper_tts import PiperPool, PiperTTS, PiperUnavailable
from callfleet.agent.providers.ready_audio import ReadyAudio
from callfleet.agent.providers.scripted_llm import SCRIPTED_MODEL, ScriptedPolicy
from callfleet.agent.providers.smart_turn import warm_smart_turn
from callfleet.agent.providers.utterance_tts import spoken_lines
from callfleet.agent.providers.whisper_stt import (
    LocalWhisperSTT,
    StreamingStats,
    load_whisper,
    transcribe_pcm,
    whisper_pool,
)

__all__ = ["STT_PROVIDERS", "TTS_PROVIDERS", "Engines", "LocalEngines"]

log = structlog.get_logger(__name__)

STT_PROVIDERS = ("whisper-local", *HOSTED_STT)
TTS_PROVIDERS = ("piper-local", "espeak", *HOSTED_TTS)


def _warm_up_audio() -> bytes:
    """One second of 16 kHz PCM: a voiced hum, so the decoder runs and not just the encoder."""
    t = np.arange(16000) / 16000
    wave = 0.2 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return bytes((wave * 32767 / 2).astype("<i2").tobytes())


class Engines(Protocol):
    @property
    def model_label(self) -> str:
        """The call's `model`: "scripted" when no LLM answers."""
        ...

    def prepare(self, options: AgentOptions) -> None:
        """The call is ringing: start synthesising the lines known before answer
        (returns at once; a TTS service built later for the call uses them)."""
        ...

    def stt(self, options: AgentOptions) -> FrameProcessor: ...

    def tts(self, options: AgentOptions) -> FrameProcessor: ...

    def llm(self, options: AgentOptions) -> FrameProcessor:
        """The LLM service, or the scripted policy standing in for it."""
        ...


class LocalEngines:
    """The real engines. `start()` loads the models so the first call does not wait."""

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        self.settings = settings or ProviderSettings()
        if self.settings.stt not in STT_PROVIDERS:
            raise ValueError(f"STT provider {self.settings.stt!r}: supported are {STT_PROVIDERS}")
        if self.settings.tts not in TTS_PROVIDERS:
            raise ValueError(f"TTS provider {self.settings.tts!r}: supported are {TTS_PROVIDERS}")
        for provider in (self.settings.stt, self.settings.tts):
            check_hosted(provider, self.settings.extra)
        self._piper: PiperPool | None = None
        self._ready: ReadyAudio | None = None
        self._tts = self.settings.tts
        self.streaming_stt = True
        """Transcribe in the callee's pauses (`LocalWhisperSTT`); False: after the VAD."""
        self.stt_stats = StreamingStats()

    @property
    def model_label(self) -> str:
        return self.settings.model_label if self.settings.llm_base_url else SCRIPTED_MODEL

    @property
    def tts_provider(self) -> str:
        """What actually speaks: `piper-local`, or `espeak` after a fallback at start."""
        return self._tts

    def start(self) -> None:
        """Load Whisper, start Piper (falling back to espeak-ng) and log what runs."""
        if self.settings.stt == "whisper-local":
            load_whisper(self.settings.whisper_threads)
        if self._tts == "piper-local":
            try:
                self._piper = PiperPool(int(self.settings.extra.get("piper_processes") or 2))
                self._piper.start()  # loads the voice now, not on a first call
            except (PiperUnavailable, RuntimeError) as exc:
                log.warning("Piper is unavailable; speaking with espeak-ng", error=str(exc))
                if self._piper is not None:
                    self._piper.close()
                self._piper = None
                self._tts = "espeak"
        if self._tts == "espeak":
            espeak_path()  # fast enough (~150x real time) to need no ready audio
        if self._piper is not None:
            piper = self._piper
            self._ready = ReadyAudio(
                lambda line: piper.synthesize(line, key=ReadyAudio, priority=Priority.LATER)
            )
        llm = (
            f"LLM {self.settings.llm_model or 'default'} at {self.settings.llm_base_url}"
            if self.settings.llm_base_url
            else "no LLM configured: the scripted policy runs the calls (model: scripted)"
        )
        log.info("agent engines", stt=self.settings.stt, tts=self._tts, llm=llm)

    def warm(self) -> None:
        """One transcription and one synthesis, so a first call's turns cost what later
        ones do (Piper's processes already spoke in `start()`; espeak needs no warming)."""
        if self.settings.stt == "whisper-local":
            model = load_whisper(self.settings.whisper_threads)
            transcribe_pcm(model, _warm_up_audio())
        if self._piper is not None:
            self._piper.synthesize("Hello.")
        warm_smart_turn()
        log.info("agent engines warm")

    def prepare(self, options: AgentOptions) -> None:
        if self._ready is None:
            return
        lines = [options.first_sentence or "", options.voicemail_message or ""]
        if not self.settings.llm_base_url:  # the scripted policy says these
            lines += [*options.script, options.closing_line]
        self._ready.prepare(spoken_lines(lines, options.pronunciation))

    @property
    def piper(self) -> PiperPool | None:
        """The Piper processes every call shares (None with another voice)."""
        return self._piper

    @property
    def ready_audio(self) -> ReadyAudio | None:
        """Lines prepared while calls rang (Piper only), with its hit counts."""
        return self._ready

    def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        if self._piper is not None:
            self._piper.close()
            self._piper = None

    def stt(self, options: AgentOptions) -> FrameProcessor:
        if self.settings.stt in HOSTED_STT:
            return hosted_stt(
                self.settings.stt,
                self.settings.extra,
                language=options.language,
                keywords=options.keywords,
            )
        threads = self.settings.whisper_threads
        return LocalWhisperSTT(
            model=load_whisper(threads),
            pool=whisper_pool(threads),
            keywords=options.keywords,
            language=options.language,
            streaming=self.streaming_stt,
            stats=self.stt_stats,
        )

    def tts(self, options: AgentOptions) -> FrameProcessor:
        if self._tts in HOSTED_TTS:
            return hosted_tts(self._tts, self.settings.extra, voice=options.voice)
        if self._tts == "piper-local":
            if self._piper is None:
                self._piper = PiperPool(int(self.settings.extra.get("piper_processes") or 2))
            return PiperTTS(
                piper=self._piper, pronunciation=options.pronunciation, ready=self._ready
            )
        return EspeakTTS(voice=self.settings.espeak_voice, pronunciation=options.pronunciation)

    def llm(self, options: AgentOptions) -> FrameProcessor:
        if not self.settings.llm_base_url:
            return ScriptedPolicy(lines=options.script, closing_line=options.closing_line)
        return openai_compatible_llm(self.settings, options)
