"""`ConversationController`: who speaks first, and what happens on a voicemail.

It sits between the user context aggregator and the LLM (or the scripted policy)
and sees every finished user turn as an `LLMContextFrame` before the LLM does.

- **Opening.** Without `wait_for_greeting` the agent speaks at once: the call's
  `first_sentence`, or else the LLM's (or script's) first reply. With it, the
  agent lets the callee's greeting end (their first turn), then speaks; if the
  callee is silent `greeting_timeout_s` after answer it speaks anyway. People say
  "Hello?" as they pick up, often over the agent's first words: when the callee's
  speech interrupts the `first_sentence`, the agent lets them finish and says the
  first sentence again (once) instead of moving on without it.
- **Voicemail.** The answering-machine detector reports through
  `on_amd_verdict`. The call's `voicemail_action` applies when the verdict is
  voicemail and either `answered_by_enabled` is set or a beep was heard (a beep is
  unmistakable; a long greeting alone could be a talkative person): `hangup`
  ends the call without a word, `leave_message` stops the agent, waits for the
  beep to end (or the greeting to fall silent) and speaks the message before
  hanging up, `ignore` carries on. While a message is being left, user turns
  never reach the LLM.

- **Disclosures.** The sentences the call's `guard_rails` ask for
  (`AgentOptions.disclosures`) are the agent's first words: spoken ahead of the
  `first_sentence` (and said again with it if the callee talks over them), or
  before the LLM's (or script's) first reply.
- **Opt-out.** Every finished callee turn goes through the opt-out detector
  (`callfleet.domain.opt_out`) before the LLM or the script sees it; so does the
  keypad (`opt_out_digit`), and the LLM's `opt_out` tool calls `opt_out` too. On
  an opt-out the agent stops talking, says `OPT_OUT_LINE` and hangs up; nothing
  the callee says after that reaches the LLM. `on_opt_out` tells the session,
  which reports the call `opted_out`.

Everything it decides is also written to the transcript as a `robot` turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    StartFrame,
    TTSSpeakFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callfleet.agent.amd import AmdVerdict, AnsweringMachineDetector
from callfleet.agent.options import AgentOptions
from callfleet.domain.opt_out import OPT_OUT_LINE, opt_out_clause
from callfleet.telephony.carrier import AnsweredBy

__all__ = ["ConversationController"]

_SILENCE_BEFORE_MESSAGE_S = 1.0
_MAX_WAIT_FOR_BEEP_S = 30.0


class ConversationController(FrameProcessor):
    def __init__(
        self,
        *,
        options: AgentOptions,
        context: LLMContext,
        amd: AnsweringMachineDetector,
        note: Callable[[str], None],
        hang_up: Callable[[str], None],
        on_opt_out: Callable[[str], None] = lambda _how: None,
    ) -> None:
        super().__init__(name="conversation")
        self._options = options
        self._llm_context = context
        self._amd = amd
        self._note = note
        self._hang_up = hang_up
        self._on_opt_out = on_opt_out
        self._opting_out = False
        self._opt_out_task: asyncio.Task[None] | None = None
        self._started = False
        self._pending_opt_out: str | None = None
        self._opening_text = " ".join((*options.disclosures, options.first_sentence or "")).strip()
        """What the agent opens with: the disclosures, then the first sentence."""
        self._awaiting_greeting = options.wait_for_greeting
        self._opened = False
        self._leaving_message = False
        self._greeting_timer: asyncio.Task[None] | None = None
        self._voicemail_task: asyncio.Task[None] | None = None
        self._analysed = asyncio.Event()
        self._opening = "none"
        """The first sentence: none -> speaking -> done, or -> interrupted -> speaking
        (said again once) -> done."""
        self._opening_retried = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            # The callee's audio has served the VAD and STT by now and nothing below
            # uses it: it stops here instead of crossing four more processors 50 times
            # a second.
            return
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._started = True
            if self._pending_opt_out is not None:  # a key pressed before the pipeline ran
                await self.opt_out(self._pending_opt_out)
            elif self._awaiting_greeting:
                self._greeting_timer = self.create_task(self._greeting_timeout())
            else:
                await self._open()
        elif isinstance(frame, LLMContextFrame) and direction is FrameDirection.DOWNSTREAM:
            if self._leaving_message or self._opting_out:
                return  # the machine's greeting is not a turn to answer; nor is a goodbye
            clause = opt_out_clause(_last_user_text(frame.context))
            if clause is not None:
                await self.opt_out(f'the callee said "{clause}"')
                return
            if self._awaiting_greeting:
                await self._greeted()
                return
            if self._opening == "interrupted" and self._options.first_sentence:
                # They spoke over the opening: now that they are done, say it again.
                self._opening, self._opening_retried = "speaking", True
                await self.push_frame(TTSSpeakFrame(self._opening_text))
                return
            await self.push_frame(frame, direction)
        else:
            if self._opening == "speaking":
                if isinstance(frame, InterruptionFrame) and not self._opening_retried:
                    self._opening = "interrupted"
                elif isinstance(frame, BotStoppedSpeakingFrame):
                    self._opening = "done"
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]  # pipecat leaves it unannotated
        for task in (self._greeting_timer, self._voicemail_task, self._opt_out_task):
            if task is not None:
                await self.cancel_task(task)

    # -- the opening -------------------------------------------------------------------

    async def _greeted(self) -> None:
        self._awaiting_greeting = False
        if self._greeting_timer is not None:
            await self.cancel_task(self._greeting_timer)
            self._greeting_timer = None
        # With a first sentence the agent says it; else the LLM answers the greeting.
        await self._open()

    async def _greeting_timeout(self) -> None:
        await asyncio.sleep(self._options.greeting_timeout_s)
        # Someone still talking (a long greeting, a machine) is not silence: let their
        # turn end, which opens the conversation through `_greeted`.
        await self._until(lambda: not self._amd.speaking, None)
        if self._awaiting_greeting and not self._leaving_message:
            self._awaiting_greeting = False
            self._greeting_timer = None
            self._note("no greeting heard; the agent speaks first")
            await self._open()

    async def _open(self) -> None:
        if self._opened or self._leaving_message:
            return
        self._opened = True
        if self._options.disclosures:
            self._note("disclosure: " + " ".join(self._options.disclosures))
        if self._options.first_sentence:
            self._opening = "speaking"
            await self.push_frame(TTSSpeakFrame(self._opening_text))
        else:
            if self._options.disclosures:
                await self.push_frame(TTSSpeakFrame(self._opening_text))
            await self.push_frame(LLMContextFrame(self._llm_context))

    # -- opt-out -----------------------------------------------------------------------

    def on_digit(self, digit: str) -> None:
        """A keypad digit (called from the media side): the opt-out key opts out."""
        if digit == self._options.opt_out_digit:
            self.request_opt_out(f"the callee pressed {digit} (opt_out_digit)")

    def request_opt_out(self, how: str) -> None:
        """Opt out from outside the pipeline's flow (the keypad, the LLM's tool)."""
        if self._opting_out or self._opt_out_task is not None:
            return
        if not self._started:  # tasks can start only once the pipeline has
            self._pending_opt_out = self._pending_opt_out or how
            return
        self._opt_out_task = self.create_task(self.opt_out(how))

    async def opt_out(self, how: str) -> None:
        """The callee asked not to be called again: confirm once, then hang up."""
        if self._opting_out or self._leaving_message:
            return
        self._opting_out = True
        self._awaiting_greeting = False
        if self._greeting_timer is not None:
            await self.cancel_task(self._greeting_timer)
            self._greeting_timer = None
        self._note(f"opt-out: {how}; the number goes on the do-not-call list")
        self._on_opt_out(how)
        await self.push_frame(InterruptionFrame())
        await self.push_frame(TTSSpeakFrame(OPT_OUT_LINE))
        # Up to the worker, which sends an EndFrame down behind the line: it is heard.
        await self.push_frame(
            EndWorkerFrame(reason="the callee opted out"), FrameDirection.UPSTREAM
        )

    # -- voicemail ---------------------------------------------------------------------

    def audio_analysed(self) -> None:
        """Called after every frame the detector has heard: voicemail waits re-check."""
        self._analysed.set()

    async def _until(self, condition: Callable[[], bool], timeout_s: float | None) -> bool:
        """Wait until `condition()` holds, re-checked after each analysed frame."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not condition():
                    self._analysed.clear()
                    await self._analysed.wait()
                return True
        return False

    def on_amd_verdict(self, verdict: AmdVerdict) -> None:
        """Called by the input transport's task when the detector decides."""
        if verdict.answered_by is not AnsweredBy.VOICEMAIL:
            return
        if self._voicemail_task is not None or self._leaving_message:
            return
        self._voicemail_task = self.create_task(self._voicemail(verdict))

    async def _voicemail(self, verdict: AmdVerdict) -> None:
        options = self._options
        if self._opting_out:
            return
        if not options.answered_by_enabled:  # act only once a beep confirms it
            await self._until(lambda: self._amd.beep_started_at_s is not None, None)
        action = options.voicemail_action
        self._note(f"voicemail detected ({verdict.reason}); action: {action}")
        if action == "ignore":
            return
        if action == "hangup" or not options.voicemail_message:
            self._hang_up("voicemail")
            return
        self._leaving_message = True
        self._awaiting_greeting = False
        await self.push_frame(InterruptionFrame())
        await self._wait_for_the_tone()
        self._note("leaving the voicemail message")
        await self.push_frame(TTSSpeakFrame(options.voicemail_message))
        await self.push_frame(
            EndWorkerFrame(reason="voicemail message left"), FrameDirection.UPSTREAM
        )

    async def _wait_for_the_tone(self) -> None:
        """Until the beep has ended, or (no beep) the greeting has fallen silent."""
        amd = self._amd

        def may_speak() -> bool:
            if amd.beep_ended_at_s is not None:
                return True
            quiet_since = amd.last_speech_end_s
            return (
                amd.beep_started_at_s is None
                and not amd.speaking
                and quiet_since is not None
                and amd.elapsed_s - quiet_since >= _SILENCE_BEFORE_MESSAGE_S
            )

        await self._until(may_speak, _MAX_WAIT_FOR_BEEP_S)


def _last_user_text(context: LLMContext) -> str:
    """The text of the context's last user message (the turn that just ended)."""
    for message in reversed(context.get_messages()):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        return ""
    return ""
