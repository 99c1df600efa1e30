"""Fakes and tools for testing the agent and what surrounds it (shipped, so users can too).

- `FakeEngines`: the `Engines` seam with a scripted STT (`FakeSTT`: each segment the
  VAD delimits "transcribes" to the next scripted line), a scripted LLM (`FakeLLM`:
  each user turn gets the next canned reply; it keeps the contexts it was given)
  and a TTS that makes a tone-and-buzz waveform whose length follows the words
  (`FakeTTS`, which keeps what it was asked to say).
- `FakeOpenAIServer`: a real HTTP server speaking the OpenAI chat-completions
  protocol (streamed), for the LLM path without a model: canned replies, or
  `ToolCall`s streamed as the OpenAI API streams a function call; it records
  whether the client hung up in the middle of a stream (a barge-in).
- `EnergyVAD`: a VAD analyzer on signal energy, to drive pipecat's turn-taking
  from synthetic audio without the Silero model.
- `PhoneLine`: the callee's end of a `CallAudio`, ticking every 20 ms as an RTP
  session does; it plays a script of `Say`/`WaitForAgent`/`Pause` steps, records
  both directions and measures the voice-to-voice latency of each reply.
- `espeak_phone_audio`: known sentences spoken by espeak-ng, band-limited to
  8 kHz and passed through G.711 mu-law, as a phone would deliver them.
- `amd_labelled_set`: the labelled calls the answering-machine detector is
  measured on (people greeting briefly, machines with and without a beep, silence,
  noise), built from the simulator's synthetic voices and, when espeak-ng is
  installed, real words.
- `word_error_rate`.
"""

from __future__ import annotations

import asyncio
import re
import time
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

from callfleet.agent.call_audio import FRAME_BYTES, FRAME_S, SAMPLE_RATE, CallAudio
from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.providers.espeak_tts import espeak_pcm
from callfleet.agent.providers.openai_llm import openai_compatible_llm
from callfleet.agent.providers.scripted_llm import ScriptedPolicy, say_as_llm
from callfleet.agent.providers.utterance_tts import UtteranceTTSService
from callfleet.agent.providers.whisper_stt import LatestSegmentFinal
from callfleet.simulator import audio as synth
from callfleet.telephony.carrier import AnsweredBy
from callfleet.telephony.rtp import g711

__all__ = [
    "EnergyVAD",
    "FakeEngines",
    "FakeLLM",
    "FakeOpenAIServer",
    "FakeSTT",
    "FakeTTS",
    "Pause",
    "PhoneLine",
    "Say",
    "ToolCall",
    "WaitForAgent",
    "amd_labelled_set",
    "espeak_phone_audio",
    "phone_channel",
    "word_error_rate",
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
        return synth.speech_like(round(seconds, 2), seed=len(self.spoken), level=0.25), SAMPLE_RATE


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
    seconds_per_word: float = 0.3
    tts_delay_s: float = 0.0
    stts: list[FakeSTT] = field(default_factory=list)
    ttss: list[FakeTTS] = field(default_factory=list)
    llms: list[FakeLLM] = field(default_factory=list)

    @property
    def model_label(self) -> str:
        if self.llm_base_url:
            return "fake-openai"
        return "scripted" if self.llm_replies is None else "fake"

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
            settings = ProviderSettings(llm_base_url=self.llm_base_url, llm_model="fake-openai")
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


@dataclass(frozen=True)
class ToolCall:
    """A reply of `FakeOpenAIServer` that calls a tool, after saying `say` (if any)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    say: str = ""


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1 streaming canned replies.

    Each request gets the next reply (then "Okay."), streamed word by word as
    server-sent events, `delay_s` apart; a `ToolCall` reply streams its words and
    then the call, its arguments in pieces, ending with `finish_reason:
    "tool_calls"`. `requests` keeps every request body, so a test can check the
    system prompt, the tools offered and what the conversation history held;
    `finished[i]` says whether the stream of request `i` was written to its end and
    `disconnected` lists the requests whose client went away in the middle.
    """

    def __init__(self, replies: Sequence[str | ToolCall], *, delay_s: float = 0.0) -> None:
        self.replies = list(replies)
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.finished: list[bool] = []
        self.disconnected: list[int] = []
        self._runner: Any = None
        self.base_url = ""

    async def start(self) -> str:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _complete(self, request: Any) -> Any:
        import json

        from aiohttp import web

        body = await request.json()
        self.requests.append(body)
        reply: str | ToolCall = self.replies.pop(0) if self.replies else "Okay."
        model = body.get("model", "fake")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }  # fmt: skip
            return f"data: {json.dumps(event)}\n\n".encode()

        if not body.get("stream"):
            self.finished.append(True)
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": str(reply)}}],
            })  # fmt: skip
        index = len(self.requests) - 1
        self.finished.append(False)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(response, chunk, reply)
        except asyncio.CancelledError:
            # The client closed the connection mid-stream (pipecat cancels a completion
            # on a barge-in); aiohttp either cancels this handler or fails the write.
            self.disconnected.append(index)
            raise
        except ConnectionError:
            self.disconnected.append(index)
            return response
        self.finished[index] = True
        return response

    async def _stream(self, response: Any, chunk: Any, reply: str | ToolCall) -> None:
        text = reply.say if isinstance(reply, ToolCall) else reply
        await response.write(chunk({"role": "assistant", "content": ""}))
        for i, word in enumerate(text.split(" ") if text else []):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            await response.write(chunk({"content": word if i == 0 else " " + word}))
        if isinstance(reply, ToolCall):
            import json

            call_id = f"call_{len(self.requests)}"
            await response.write(chunk({"tool_calls": [{
                "index": 0, "id": call_id, "type": "function",
                "function": {"name": reply.name, "arguments": ""},
            }]}))  # fmt: skip
            arguments = json.dumps(reply.arguments)
            for start in range(0, len(arguments), 8):
                piece = arguments[start : start + 8]
                await response.write(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
            await response.write(chunk({}, "tool_calls"))
        else:
            await response.write(chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


# -- the callee's end of the line --------------------------------------------------------


_LOUD = 0.003
"""A frame above this RMS (about -50 dBFS) is sound, below it silence."""


@dataclass(frozen=True)
class Say:
    pcm: bytes
    label: str = ""


@dataclass(frozen=True)
class WaitForAgent:
    """Until the agent has spoken and then been quiet for `quiet_s` (or `timeout_s`)."""

    quiet_s: float = 0.8
    timeout_s: float = 20.0


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass
class Reply:
    """The agent's answer to one thing the callee said."""

    after: str
    latency_s: float | None
    """From the end of the callee's speech (its last frame above -50 dBFS) to the
    agent's first audio frame, on the callee's 20 ms clock."""


class PhoneLine:
    """Plays the callee's side of a call into a `CallAudio` on a 20 ms clock."""

    def __init__(self, audio: CallAudio, script: Sequence[Say | WaitForAgent | Pause]) -> None:
        self.audio = audio
        self.agent_audio = bytearray()
        self.callee_audio = bytearray()
        self.replies: list[Reply] = []
        self.script_done = asyncio.Event()
        self.agent_onsets: list[float] = []
        """Seconds from the start of the line at which each agent talk spurt began."""
        self._steps = iter(script)
        self._step: Say | WaitForAgent | Pause | None = None
        self._step_started = 0.0
        self._pending: list[bytes] = []
        self._label = ""
        self._trailing_quiet = 0
        """Frames of silence at the end of the utterance being played: its speech ends
        before them, and latency is measured from the end of speech."""
        self._said_end: float | None = None
        self._talking = False
        self._quiet_since = 0.0
        self._now = 0.0

    async def run(self, *, linger_s: float = 30.0) -> None:
        """Play the script, then keep the line open (silence) until the call ends or `linger_s`."""
        start = time.monotonic()
        tick = 0
        finished_at: float | None = None
        while not self.audio.closed:
            tick += 1
            self._now = tick * FRAME_S
            delay = start + self._now - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._hear_agent(self.audio.read())
            if not self._pending and finished_at is None and not self._next_step():
                finished_at = self._now
                self.script_done.set()
            frame = self._pending.pop(0) if self._pending else bytes(FRAME_BYTES)
            if self._label and len(self._pending) <= self._trailing_quiet:
                self._said_end = self._now + FRAME_S
                self.replies.append(Reply(self._label, None))
                self._label = ""
            self.callee_audio += frame
            self.audio.feed(frame)
            if finished_at is not None and self._now - finished_at >= linger_s:
                return

    def _next_step(self) -> bool:
        """Advance the script; False once it is over."""
        while True:
            step = self._step
            if step is None:
                step = self._step = next(self._steps, None)
                self._step_started = self._now
                if step is None:
                    return False
            elapsed = self._now - self._step_started
            if isinstance(step, Say):
                pcm = step.pcm
                self._pending = [
                    pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\x00")
                    for i in range(0, len(pcm), FRAME_BYTES)
                ]
                self._label = step.label or f"utterance {len(self.replies) + 1}"
                loud = [synth.rms(frame) > _LOUD for frame in self._pending]
                self._trailing_quiet = loud[::-1].index(True) if any(loud) else 0
                self._step = None
                return True
            if isinstance(step, Pause):
                if elapsed < step.seconds:
                    return True
            else:
                spoke = any(onset >= self._step_started for onset in self.agent_onsets)
                quiet = not self._talking and self._now - self._quiet_since >= step.quiet_s
                if not (spoke and quiet) and elapsed < step.timeout_s:
                    return True
            self._step = None

    def _hear_agent(self, frame: bytes) -> None:
        self.agent_audio += frame
        loud = synth.rms(frame) > _LOUD
        if loud and not self._talking:
            self._talking = True
            self.agent_onsets.append(self._now)
            if self._said_end is not None and self.replies:
                self.replies[-1].latency_s = round(self._now - self._said_end, 3)
                self._said_end = None
        elif not loud and self._talking:
            self._talking = False
            self._quiet_since = self._now


# -- audio made for tests ------------------------------------------------------------------


def phone_channel(pcm: bytes, rate: int) -> bytes:
    """PCM at `rate` as the callee's phone delivers it: 8 kHz, through G.711 mu-law."""
    import soxr  # type: ignore[import-untyped]  # ships no type information

    samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    narrow = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return g711.decode("PCMU", g711.encode("PCMU", narrow))


async def espeak_phone_audio(
    text: str, *, voice: str = "en-us", words_per_minute: int = 150
) -> bytes:
    """`text` spoken by espeak-ng, as 8 kHz mu-law-degraded PCM."""
    pcm, rate = await espeak_pcm(text, voice=voice, words_per_minute=words_per_minute)
    return phone_channel(pcm, rate)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (case and punctuation ignored)."""

    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


# -- the labelled set for answering-machine detection ---------------------------------------


def _noise(seconds: float, level: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, level * 32767, int(seconds * SAMPLE_RATE))
    return np.clip(samples, -32767, 32767).astype("<i2").tobytes()


def _mix(pcm: bytes, noise: bytes) -> bytes:
    a = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    b = np.frombuffer(noise[: len(pcm)].ljust(len(pcm), b"\x00"), dtype="<i2").astype(np.int32)
    return bytes(np.clip(a + b, -32767, 32767).astype("<i2").tobytes())


HUMAN_PHRASES = ("Hello?", "Hi, this is Dana.", "Yeah, hello.", "Hello, who is this?")
MACHINE_PHRASES = (
    "Hi, you've reached Dana. I can't take your call right now, "
    "please leave a message after the tone and I'll call you back.",
    "The person you are calling is not available. Please record your message.",
)


def amd_labelled_set(espeak: dict[str, bytes] | None = None) -> list[tuple[AnsweredBy, str, bytes]]:
    """(expected verdict, name, 8 kHz PCM from the moment of answer) for each test call.

    `espeak` maps the phrases in `HUMAN_PHRASES` and `MACHINE_PHRASES` to phone
    audio of them (see `espeak_phone_audio`); without it only synthetic voices are used.
    """
    cases: list[tuple[AnsweredBy, str, bytes]] = []
    silence = synth.silence
    for seed, (delay, length) in enumerate(
        [(d, n) for d in (0.2, 0.5, 0.9) for n in (0.4, 0.7, 1.0, 1.3, 1.7)]
    ):
        greeting = synth.speech_like(length, seed=100 + seed, level=0.15 + 0.02 * (seed % 4))
        call = silence(delay) + greeting + silence(1.6) + synth.human_chatter()[: 16000 * 3]
        cases.append((AnsweredBy.HUMAN, f"human synthetic {length}s after {delay}s", call))
    beeps = (1000.0, 850.0, 1400.0, 440.0)
    for i, (greeting_s, beep) in enumerate(
        [(g, b) for g in (3.0, 5.0, 8.0, 12.0) for b in (True, False)]
    ):
        voice = synth.speech_like(greeting_s, seed=200 + i, level=0.14 + 0.03 * (i % 3))
        call = silence(0.3 + 0.1 * (i % 4)) + voice
        call += (synth.tone(beeps[i // 2], 0.5, level=0.35) if beep else b"") + silence(4.0)
        cases.append(
            (AnsweredBy.VOICEMAIL, f"machine {greeting_s}s {'with' if beep else 'no'} beep", call)
        )
    cases.append((AnsweredBy.UNKNOWN, "silence", silence(8.0)))
    cases.append((AnsweredBy.UNKNOWN, "line noise -40 dBFS", _noise(8.0, 0.01, 1)))
    cases.append((AnsweredBy.UNKNOWN, "line noise -25 dBFS", _noise(8.0, 0.056, 2)))
    cases.append((AnsweredBy.HUMAN, "hello over noise", _mix(
        silence(0.3) + synth.human_hello() + silence(3.0), _noise(6.0, 0.005, 3)
    )))  # fmt: skip
    if espeak:
        for j, phrase in enumerate(HUMAN_PHRASES):
            spoken = espeak.get(phrase)
            if spoken:
                call = (
                    silence(0.3 + 0.2 * j) + spoken + silence(2.0) + synth.human_chatter()[:32000]
                )
                cases.append((AnsweredBy.HUMAN, f"human says {phrase!r}", call))
        for phrase in MACHINE_PHRASES:
            spoken = espeak.get(phrase)
            if spoken:
                for beep in (True, False):
                    call = silence(0.5) + spoken + (synth.beep(0.4) if beep else b"") + silence(4.0)
                    name = f"machine says {phrase[:20]!r}… {'with' if beep else 'no'} beep"
                    cases.append((AnsweredBy.VOICEMAIL, name, call))
    return cases
