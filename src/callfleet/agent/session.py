"""`PipecatAgent`: the agent on one answered call, as a pipecat pipeline.

The carrier hands the agent a `CallAudio` (wired to the call's RTP session), an
`AgentCall` (the call's options and where to put its recording) and an event
that is set when the call ends from outside (the callee's BYE, the dispatcher's
stop, `max_duration`). `run()` returns an `AgentOutcome` when either the agent
hangs up (`ended_by=ASSISTANT`: the script is done, a voicemail was handled) or
the event is set (`ended_by=None`: the carrier knows who ended it).

The pipeline:

    CallInput -> STT -> GreetingWords -> user aggregator (Silero VAD, end of turn)
      -> ConversationController [-> LiveInstructions] -> LLM | ScriptedPolicy
      -> TTS -> CallOutput -> assistant aggregator

A call's `dynamic_data` is fetched before the pipeline starts (within
`LOAD_BUDGET_S`); its values fill the prompt's remaining `{{name}}` placeholders
and are listed in the instructions, and `LiveInstructions` keeps uncached ones
fresh. When a real LLM answers, it is offered the call's tools
(`callfleet.agent.tools`: `end_call`, `transfer_call`, the custom HTTP tools).

The assistant aggregator sits after the output, so the context (and the
transcript) holds only what was actually played to the callee, cut where a
barge-in stopped it. The answering-machine detector hears the callee's audio at
8 kHz from `CallInput`, from the moment of answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from callfleet.agent._pipecat import PIPECAT_VERSION

# isort: split

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.turns.user_mute.always_user_mute_strategy import AlwaysUserMuteStrategy
from pipecat.turns.user_mute.base_user_mute_strategy import BaseUserMuteStrategy
from pipecat.turns.user_stop import (
    BaseUserTurnStopStrategy,
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from callfleet.agent.amd import AmdVerdict, AnsweringMachineDetector
from callfleet.agent.call_audio import SAMPLE_RATE, CallAudio
from callfleet.agent.controller import ConversationController
from callfleet.agent.dynamic_data import DynamicData, fill
from callfleet.agent.engines import Engines
from callfleet.agent.options import AgentOptions
from callfleet.agent.providers.openai_llm import CallLLMService
from callfleet.agent.providers.smart_turn import SharedSmartTurn
from callfleet.agent.recording import StereoRecorder
from callfleet.agent.tools import CallTools, LiveInstructions
from callfleet.agent.transport import CallTransport
from callfleet.agent.turn_end import CalleeTurnStop
from callfleet.clock import utcnow
from callfleet.telephony.carrier import AnsweredBy, EndedBy, TranscriptTurn

__all__ = ["AgentCall", "AgentOutcome", "CallMedia", "PipecatAgent"]

log = structlog.get_logger(__name__)

_PIPELINE_RATE = 16000
_VAD_STOP_S = 0.4
"""`end_of_turn="silence"`: silence that ends a speech segment. Longer than pipecat's
0.2 s so a comma's pause does not cut a sentence in two for Whisper (fewer, whole
segments transcribe better); the rest of the speech timeout runs after it."""
_SMART_VAD_STOP_S = 0.4
"""`end_of_turn="smart"`: the quiet after which Smart Turn judges the turn. pipecat
suggests 0.2 s; on phone audio with Whisper tiny.en that cut callees' sentences into
fragments that transcribed badly and became turns of their own (the people-over-SIP
test heard the agent skip its script), so the VAD keeps its 0.4 s."""
END_OF_TURN = ("smart", "silence")
_STOP_GRACE_S = 5.0
_DRAIN_S = 3.0
_QUIET_AFTER_SPEECH_S = 0.6
"""How long the agent's audio must stay quiet before its words count as said."""
_MAX_SPEECH_WAIT_S = 15.0


@dataclass(frozen=True)
class AgentCall:
    """One answered call, as the agent needs to know it."""

    call_id: str
    options: AgentOptions
    recording_path: Path | None = None
    """Where to write the stereo WAV when `options.record` is true."""
    transfer: Callable[[str], Awaitable[bool]] | None = None
    """Hands the call to a phone number (E.164) with a SIP REFER; True when the far
    end accepted the transfer (the call then ends). None: transfers unavailable."""


@dataclass
class AgentOutcome:
    transcript: list[TranscriptTurn] = field(default_factory=list)
    ended_by: EndedBy | None = None
    """ASSISTANT when the agent hung up; None when the call was ended from outside."""
    answered_by: AnsweredBy | None = None
    """The detector's verdict (None if it had not decided when the call ended)."""
    amd: AmdVerdict | None = None
    recording_path: Path | None = None
    model: str = "scripted"
    hangup_reason: str | None = None
    transferred_to: str | None = None
    """The number the agent transferred the call to (the carrier then hangs up)."""
    error: str | None = None
    interruptions: int = 0
    opted_out: bool = False
    """The callee asked not to be called again (words, keypad or the `opt_out` tool)."""

    @property
    def concatenated_transcript(self) -> str:
        return "\n".join(f"{turn.user}: {turn.text}" for turn in self.transcript)


class CallMedia(Protocol):
    """The agent that holds answered calls' conversations (`agent.phone.AgentLine`
    puts it on the line)."""

    def describe(self) -> str: ...

    def not_ready(self) -> str | None:
        """None when a call answered now would hear the agent at once; else why not."""
        ...

    def prepare(self, options: AgentOptions) -> None:
        """A call with these options is being dialled: get its known lines ready."""
        ...

    async def run(
        self, call: AgentCall, audio: CallAudio, hangup: asyncio.Event
    ) -> AgentOutcome: ...

    async def close(self) -> None: ...


class PipecatAgent:
    """`CallMedia` built on pipecat; one instance serves every call of a process."""

    def __init__(
        self,
        engines: Engines,
        *,
        vad_params: VADParams | None = None,
        vad_factory: Callable[[VADParams], VADAnalyzer] | None = None,
        allow_private_urls: bool = False,
        end_of_turn: str = "smart",
    ) -> None:
        """`allow_private_urls`: tools and `dynamic_data` may reach loopback and private
        addresses (pass `settings.webhook_allow_private`: the same policy as webhooks).

        `end_of_turn`: "smart" (Smart Turn judges each pause of 0.4 s; the call's
        speech timeout is the longest wait) or "silence" (the speech timeout of quiet
        always: how the agent worked before, kept for comparison)."""
        if end_of_turn not in END_OF_TURN:
            raise ValueError(f"end_of_turn {end_of_turn!r}: one of {END_OF_TURN}")
        self.engines = engines
        self.end_of_turn = end_of_turn
        self.allow_private_urls = allow_private_urls
        # No volume gate (pipecat's default is 0.6): its smoothed volume starts from
        # zero, so it swallowed a callee's first "Hello?" at the start of the call.
        # Silero's confidence alone holds up on phone audio and in line noise.
        stop_s = _SMART_VAD_STOP_S if end_of_turn == "smart" else _VAD_STOP_S
        self.vad_params = vad_params or VADParams(confidence=0.6, min_volume=0.0, stop_secs=stop_s)
        self.vad_factory = vad_factory or silero_vad

    def describe(self) -> str:
        return f"pipecat {PIPECAT_VERSION} agent, model {self.engines.model_label}"

    def not_ready(self) -> str | None:
        return None  # built on engines its maker loaded

    def prepare(self, options: AgentOptions) -> None:
        self.engines.prepare(options)

    async def close(self) -> None:
        """The engines belong to whoever built them (`AgentRuntime` closes its own)."""

    async def run(self, call: AgentCall, audio: CallAudio, hangup: asyncio.Event) -> AgentOutcome:
        dynamic: DynamicData | None = None
        if call.options.dynamic_data:
            variables = {**call.options.variables, "call_id": call.call_id}
            dynamic = DynamicData(
                call.options.dynamic_data, variables, allow_private=self.allow_private_urls
            )
            loading = asyncio.create_task(dynamic.load())
            outside = asyncio.create_task(hangup.wait())
            await asyncio.wait({loading, outside}, return_when=asyncio.FIRST_COMPLETED)
            outside.cancel()
            if not loading.done():  # the callee hung up meanwhile
                loading.cancel()
                audio.close()
                return AgentOutcome(model=self.engines.model_label)
        try:
            conversation = _Conversation(self, call, audio, dynamic)
        except Exception as exc:  # a provider that cannot start must not crash the carrier
            log.exception("the agent could not start", call_id=call.call_id)
            if audio.recorder is not None and isinstance(audio.recorder, StereoRecorder):
                audio.recorder.close()
            audio.close()
            return AgentOutcome(model=self.engines.model_label, error=f"agent failed: {exc!r}")
        return await conversation.run(hangup)


def _as_line(value: Any) -> str:
    return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))[:500]


class GreetingWords(FrameProcessor):
    """Hands each transcription to the answering-machine detector, and passes it on."""

    def __init__(self, hear: Callable[[str], None]) -> None:
        super().__init__(name="greeting-words")
        self._hear = hear

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self._hear(frame.text)
        await self.push_frame(frame, direction)


def silero_vad(params: VADParams) -> VADAnalyzer:
    """Silero VAD (its ONNX ships in pipecat's wheel), one per call."""
    return SileroVADAnalyzer(params=params)


class _Conversation:
    """The state of one call's pipeline while it runs."""

    def __init__(
        self, agent: PipecatAgent, call: AgentCall, audio: CallAudio, dynamic: DynamicData | None
    ) -> None:
        self.call = call
        self.audio = audio
        self.dynamic = dynamic
        self.facts: dict[str, tuple[str, Any]] = {}
        """What the call's tools found: name -> (context, value)."""
        label = agent.engines.model_label
        if label != "scripted" and call.options.model:
            label = call.options.model  # the call asked the LLM endpoint for this one
        self.outcome = AgentOutcome(model=label)
        options = self._with_dynamic_data(call.options)
        self.amd = AnsweringMachineDetector(hears_words=True)
        self.hangup_requested = asyncio.Event()
        self.recorder: StereoRecorder | None = None
        if options.record and call.recording_path is not None:
            self.recorder = StereoRecorder(call.recording_path)
            audio.recorder = self.recorder
        llm = agent.engines.llm(options)
        if isinstance(llm, CallLLMService):
            llm.on_failure = self._llm_failed
        self.tools: CallTools | None = None
        self.context = self._context_with_tools(agent, options, llm)
        self.pipeline = self._pipeline(agent, options, llm)
        self.worker = PipelineWorker(
            self.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=_PIPELINE_RATE, audio_out_sample_rate=SAMPLE_RATE
            ),
            idle_timeout_secs=None,
            enable_rtvi=False,
            name=f"call-{call.call_id}",
        )
        self._register_events()

    # -- building the pipeline -------------------------------------------------------------

    def _with_dynamic_data(self, options: AgentOptions) -> AgentOptions:
        """The call's options with the fetched dynamic data filled into its prompt and
        first sentence; each fetch that failed is noted in the transcript."""
        if self.dynamic is None:
            return options
        for failure in self.dynamic.failures:
            self.note(f"dynamic data unavailable: {failure}")
        first = options.first_sentence
        return replace(
            options,
            prompt=self.instructions(),
            first_sentence=fill(first, self.dynamic.values, default=None) if first else first,
        )

    def _context_with_tools(
        self, agent: PipecatAgent, options: AgentOptions, llm: FrameProcessor
    ) -> LLMContext:
        """The conversation's context; a real LLM is offered the call's tools in it."""
        if not isinstance(llm, LLMService):  # the scripted policy calls no tools
            return LLMContext()
        variables = {**options.variables, "call_id": self.call.call_id}
        self.tools = CallTools(
            options,
            self,
            transfer=self.call.transfer,
            allow_private=agent.allow_private_urls,
            variables=variables,
        )
        self.tools.register(llm)
        return LLMContext(tools=self.tools.tools_schema())

    def _user_params(self, agent: PipecatAgent, options: AgentOptions) -> LLMUserAggregatorParams:
        """When the callee's turn ends (Smart Turn at each pause, the speech timeout at
        the most, a bare first greeting at once and a hanging sentence not before the
        timeout; or VAD then the rest of the speech timeout) and whether they may
        barge in."""
        stop: BaseUserTurnStopStrategy
        if agent.end_of_turn == "smart":
            analyzer = SharedSmartTurn(
                max_wait_s=options.speech_timeout_s, vad_stop_s=agent.vad_params.stop_secs
            )
            stop = CalleeTurnStop(turn_analyzer=analyzer, max_wait_s=options.speech_timeout_s)
        else:
            after_vad = max(0.1, options.speech_timeout_s - agent.vad_params.stop_secs)
            stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=after_vad)
        mute: list[BaseUserMuteStrategy] = []
        if options.block_interruptions:  # the callee cannot barge in while the agent talks
            mute.append(AlwaysUserMuteStrategy())  # type: ignore[no-untyped-call]
        return LLMUserAggregatorParams(
            vad_analyzer=agent.vad_factory(agent.vad_params),
            user_turn_strategies=UserTurnStrategies(stop=[stop]),
            user_mute_strategies=mute,
        )

    def _pipeline(
        self, agent: PipecatAgent, options: AgentOptions, llm: FrameProcessor
    ) -> Pipeline:
        """The processors in the order the module docstring draws them."""
        live: list[FrameProcessor] = []
        if self.dynamic is not None and self.dynamic.live and isinstance(llm, LLMService):
            live.append(LiveInstructions(self.dynamic, self.instructions))
        pair = LLMContextAggregatorPair(self.context, user_params=self._user_params(agent, options))
        self.user_aggregator, self.assistant_aggregator = pair.user(), pair.assistant()
        self.controller = ConversationController(
            options=options,
            context=self.context,
            amd=self.amd,
            note=self.note,
            hang_up=self.hang_up,
            on_opt_out=self._opted_out,
        )
        self.audio.on_digit = self.controller.on_digit
        for digit in self.audio.digits:  # pressed while the agent was getting ready
            self.controller.on_digit(digit)
        self.transport = CallTransport(self.audio, on_callee_audio=self._heard)
        return Pipeline(
            [
                self.transport.input(),
                agent.engines.stt(options),
                GreetingWords(self._heard_words),
                self.user_aggregator,
                self.controller,
                *live,
                llm,
                agent.engines.tts(options),
                self.transport.output(),
                self.assistant_aggregator,
            ]
        )

    # -- transcript --------------------------------------------------------------------

    def _register_events(self) -> None:
        async def user_said(_aggregator: Any, _strategy: Any, message: Any) -> None:
            text = (getattr(message, "content", None) or "").strip()
            if text:
                self._turn("user", text, getattr(message, "timestamp", None))

        async def agent_said(_aggregator: Any, message: Any) -> None:
            text = (getattr(message, "content", None) or "").strip()
            if text:
                self._turn("assistant", text, getattr(message, "timestamp", None))

        self.user_aggregator.add_event_handler("on_user_turn_stopped", user_said)
        self.assistant_aggregator.add_event_handler("on_assistant_turn_stopped", agent_said)

    def _turn(self, speaker: str, text: str, started: object = None) -> None:
        """Add a turn, stamped with when it started (pipecat's ISO time) or now."""
        at = utcnow()
        if isinstance(started, str) and started:
            with contextlib.suppress(ValueError):
                parsed = datetime.fromisoformat(started.replace("Z", "+00:00"))
                at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        self.outcome.transcript.append(TranscriptTurn(speaker, text, at))
        self.outcome.transcript.sort(key=lambda turn: turn.at)

    def note(self, text: str) -> None:
        """A system event in the transcript (speaker `robot`)."""
        self._turn("robot", text)

    def instructions(self) -> str:
        """The call's prompt with the values of its dynamic data and of what its tools
        found filled in, and listed."""
        values = dict(self.dynamic.values) if self.dynamic is not None else {}
        values.update({name: value for name, (_, value) in self.facts.items()})
        parts = [fill(self.call.options.prompt, values, default=None)]
        if self.dynamic is not None:
            parts.append(self.dynamic.instructions())
        if self.facts:
            found = [
                f"- {name}{f' ({about})' if about else ''}: {_as_line(value)}"
                for name, (about, value) in self.facts.items()
            ]
            parts.append("What your tools found during this call:\n" + "\n".join(found))
        return "\n\n".join(part for part in parts if part)

    # -- what the tools need (`callfleet.agent.tools.ToolHost`) ---------------------------

    def action(self, text: str) -> None:
        """A tool call or its result in the transcript (speaker `agent-action`)."""
        self._turn("agent-action", text)

    async def finish_speaking(self, *, starts_within_s: float = 0.0) -> None:
        """Until the agent's audio has been quiet for a moment (its words were heard).

        `starts_within_s`: words were just asked for; first wait (that long at most)
        for TTS to start playing them.
        """
        loop = asyncio.get_running_loop()
        started = quiet_since = loop.time()
        waiting_for_words = starts_within_s > 0
        while loop.time() - started < _MAX_SPEECH_WAIT_S and not self.audio.closed:
            now = loop.time()
            if self.audio.queued_ms > 0:
                waiting_for_words, quiet_since = False, now
            elif waiting_for_words and now - started >= starts_within_s:
                waiting_for_words, quiet_since = False, now  # they never came
            elif not waiting_for_words and now - quiet_since >= _QUIET_AFTER_SPEECH_S:
                return
            await asyncio.sleep(0.02)

    def learned(self, facts: Mapping[str, tuple[str, Any]]) -> str:
        self.facts.update(facts)
        return self.instructions()

    def ending(self, reason: str) -> None:
        self.outcome.hangup_reason = reason

    def opt_out(self, how: str) -> None:
        """The LLM's `opt_out` tool: the controller confirms and hangs up."""
        self.controller.request_opt_out(how)

    def _opted_out(self, how: str) -> None:
        self.outcome.opted_out = True
        self.ending(f"opt-out: {how}")

    def transferred(self, number: str) -> None:
        self.outcome.transferred_to = number
        self.hang_up(f"transferred to {number}")

    # -- the call ----------------------------------------------------------------------

    def _heard(self, pcm: bytes) -> None:
        self._verdict(self.amd.feed(pcm))
        self.controller.audio_analysed()

    def _heard_words(self, text: str) -> None:
        self._verdict(self.amd.hear(text))

    def _verdict(self, verdict: AmdVerdict | None) -> None:
        """A verdict, or its revision to voicemail: the controller acts on it."""
        if verdict is not None:
            self.outcome.amd = verdict
            self.controller.on_amd_verdict(verdict)

    def _llm_failed(self, why: str) -> None:
        """The LLM failed after its retry: the call ends after the fallback line."""
        self.outcome.error = why
        self.note(f"{why}; the agent said its fallback line and hung up")
        self.ending(why)

    def hang_up(self, reason: str) -> None:
        """The agent ends the call now, without another word."""
        self.outcome.hangup_reason = reason
        self.hangup_requested.set()

    async def run(self, hangup: asyncio.Event) -> AgentOutcome:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        running = asyncio.create_task(runner.run(), name=f"agent-{self.call.call_id}")
        outside = asyncio.create_task(hangup.wait())
        ourselves = asyncio.create_task(self.hangup_requested.wait())
        try:
            await asyncio.wait({running, outside, ourselves}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                self.outcome.ended_by = EndedBy.ASSISTANT
                self.outcome.hangup_reason = self.outcome.hangup_reason or "conversation finished"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_DRAIN_S):
                        await self.audio.drained()  # the last words reach the callee
            else:
                if ourselves.done() and not hangup.is_set():
                    self.outcome.ended_by = EndedBy.ASSISTANT
                await self.worker.cancel(reason="call ended")
            async with asyncio.timeout(_STOP_GRACE_S):
                await running
        except TimeoutError:
            log.warning("the pipeline did not stop in time", call_id=self.call.call_id)
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running
        except asyncio.CancelledError:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running
            raise
        finally:
            for task in (outside, ourselves):
                task.cancel()
            self.audio.close()
            if self.recorder is not None:
                self.outcome.recording_path = self.recorder.close()
        if running.done() and not running.cancelled() and running.exception() is not None:
            self.outcome.error = f"agent pipeline failed: {running.exception()!r}"
        self.outcome.amd = self.outcome.amd or self.amd.verdict
        self.outcome.answered_by = self.amd.answered_by
        self.outcome.interruptions = self.transport.output().interruptions
        return self.outcome
