"""The tools the LLM is offered on a call, and the live data in its instructions.

Tools exist only where a real LLM answers (a pipecat `LLMService`, i.e. an
OpenAI-compatible endpoint is configured); the scripted policy has none.

- `end_call(reason?)`: the agent finishes what it is saying, then hangs up
  (`hangup_reason` "the agent ended the call").
- `opt_out()`: the person asked not to be called again. The agent says
  `OPT_OUT_LINE` and hangs up, and the number joins the account's do-not-call list
  (`ConversationController.opt_out`; the phrase matcher there is the backstop for
  the opt-outs the model misses).
- `transfer_call(department?)`: offered when the call has `transfer_phone_number`
  or `transfer_list` and the carrier can transfer (`AgentCall.transfer`). Says
  "Transferring you now." unless the model already said something, lets it be
  heard, then hands the call over (a SIP REFER). Success ends the agent's part of
  the call; failure is the tool's result, so the model can tell the caller.
- one tool per custom `HttpTool` of the call's `tools`: its `{{placeholders}}` are
  filled from the call's variables and the arguments its `input_schema` declares
  (those win; undeclared ones are dropped); its `speech` is said while the request
  runs; the result is the `response_data` values picked out of the answer, or the
  answer itself (cut to `MAX_RESULT_CHARS`), or `{"error": ...}`. As in the hosted
  product, `response_data` values also become variables of the agent's prompt
  (`{{status}}`) and lines of its instructions, from the next LLM turn on.

Every call of a tool and its result are written to the transcript as
`agent-action` turns. `LiveInstructions` keeps the system instruction in step
with `dynamic_data` sources that are not cached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    FunctionCallResultProperties,
    LLMContextFrame,
    LLMUpdateSettingsFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.services.settings import LLMSettings

from callfleet.agent.dynamic_data import DynamicData, OutboundError, extract, fill, send
from callfleet.agent.options import AgentOptions, HttpTool

__all__ = ["MAX_RESULT_CHARS", "TRANSFER_LINE", "CallTools", "LiveInstructions", "ToolHost"]

log = structlog.get_logger(__name__)

TRANSFER_LINE = "Transferring you now."
MAX_RESULT_CHARS = 4000
"""An answer longer than this reaches the LLM cut short (and is marked so)."""
_ACTION_CHARS = 500
_TRANSFER_TIMEOUT_S = 20.0
_LINE_STARTS_WITHIN_S = 3.0
"""How long TTS may take to start the transfer line before the transfer goes ahead."""


class ToolHost(Protocol):
    """What the tools need from the conversation they run in."""

    def action(self, text: str) -> None:
        """Write an `agent-action` turn to the transcript."""
        ...

    async def finish_speaking(self, *, starts_within_s: float = 0.0) -> None:
        """Until what the agent is saying has been heard (bounded); with
        `starts_within_s`, words were just asked for and may not have started yet."""
        ...

    def ending(self, reason: str) -> None:
        """The agent is ending the call for `reason` (once its last words are out)."""
        ...

    def transferred(self, number: str) -> None:
        """The call went to `number`: the agent's part is over now."""
        ...

    def opt_out(self, how: str) -> None:
        """The callee asked not to be called again: confirm, hang up, report it."""
        ...

    def learned(self, facts: Mapping[str, tuple[str, Any]]) -> str:
        """A tool found `facts` (name -> (context, value)); the instructions now."""
        ...


def _compact(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


class CallTools:
    """The tools of one call: their schemas for the LLM and the handlers behind them."""

    def __init__(
        self,
        options: AgentOptions,
        host: ToolHost,
        *,
        transfer: Callable[[str], Awaitable[bool]] | None,
        allow_private: bool = False,
        variables: Mapping[str, object] | None = None,
    ) -> None:
        self.options = options
        self.host = host
        self.transfer = transfer
        self.allow_private = allow_private
        self.variables = dict(variables if variables is not None else options.variables)
        self.numbers = dict(options.transfer_numbers) if transfer is not None else {}
        self._http = {tool.name: tool for tool in options.tools}

    @property
    def names(self) -> list[str]:
        """The tools offered, in order."""
        return [s.name for s in self.schemas()]

    def schemas(self) -> list[FunctionSchema]:
        out = [
            FunctionSchema(
                name="end_call",
                description=(
                    "Hang up. Use it when the conversation is over and you have said goodbye. "
                    "Whatever you are saying is finished first."
                ),
                properties={"reason": {"type": "string", "description": "Why, in a few words."}},
                required=[],
            ),
            FunctionSchema(
                name="opt_out",
                description=(
                    "The person asks not to be called again (to be taken off the list, "
                    "not to be contacted, to unsubscribe). Call it at once and say nothing "
                    "yourself: the agent confirms in one line, hangs up and puts the "
                    "number on the do-not-call list."
                ),
                properties={},
                required=[],
            ),
        ]
        if self.numbers:
            departments = sorted(k for k in self.numbers if k != "default")
            properties: dict[str, Any] = {}
            if departments:
                properties["department"] = {
                    "type": "string",
                    "enum": departments,
                    "description": "Which team to transfer to"
                    + ("; leave it out for the main line." if "default" in self.numbers else "."),
                }
            out.append(
                FunctionSchema(
                    name="transfer_call",
                    description=(
                        "Transfer the call to a person. Use it when the person asks for a human "
                        "or your instructions say to transfer. Tell them first, briefly."
                    ),
                    properties=properties,
                    required=[] if "default" in self.numbers or not departments else ["department"],
                )
            )
        for tool in self.options.tools:
            schema = tool.input_schema
            out.append(
                FunctionSchema(
                    name=tool.name,
                    description=tool.description,
                    properties=dict(schema.get("properties") or {}),
                    required=[str(r) for r in schema.get("required") or []],
                )
            )
        return out

    def tools_schema(self) -> ToolsSchema:
        return ToolsSchema(standard_tools=self.schemas())

    def register(self, llm: LLMService) -> None:
        """Register every offered tool's handler on the call's LLM service."""
        llm.register_function("end_call", self._end_call)
        llm.register_function("opt_out", self._opt_out)
        if self.numbers:
            llm.register_function(
                "transfer_call", self._transfer_call, timeout_secs=_TRANSFER_TIMEOUT_S + 5
            )
        for tool in self.options.tools:

            async def handler(params: FunctionCallParams, tool: HttpTool = tool) -> None:
                await self._call_http(tool, params)

            llm.register_function(tool.name, handler, timeout_secs=tool.request.timeout_s + 2)

    def _called(self, params: FunctionCallParams) -> None:
        args = _compact(dict(params.arguments), _ACTION_CHARS)
        self.host.action(f"{params.function_name}({args})")

    # -- handlers ------------------------------------------------------------------------

    async def _end_call(self, params: FunctionCallParams) -> None:
        self._called(params)
        reason = str(params.arguments.get("reason") or "").strip()
        await params.result_callback(
            {"ended": True}, properties=FunctionCallResultProperties(run_llm=False)
        )
        self.host.action("end_call: hanging up after the last words")
        self.host.ending("the agent ended the call" + (f": {reason}" if reason else ""))
        # Upstream to the worker, which sends an EndFrame down from the top: it reaches
        # TTS and the output behind the words already on their way, so they are heard.
        await params.llm.push_frame(
            EndWorkerFrame(reason="the agent ended the call"), FrameDirection.UPSTREAM
        )

    async def _opt_out(self, params: FunctionCallParams) -> None:
        self._called(params)
        await params.result_callback(
            {"opted_out": True}, properties=FunctionCallResultProperties(run_llm=False)
        )
        self.host.opt_out("the agent's opt_out tool")

    async def _transfer_call(self, params: FunctionCallParams) -> None:
        self._called(params)
        department = str(params.arguments.get("department") or "default")
        number = self.numbers.get(department) or self.numbers.get("default")
        if number is None:
            choices = ", ".join(sorted(self.numbers))
            await params.result_callback(
                {"transferred": False, "error": f"No such department; choose one of {choices}."}
            )
            return
        announce = not getattr(params.llm, "spoke_this_response", False)
        if announce:
            await params.llm.push_frame(TTSSpeakFrame(TRANSFER_LINE))
        # Shielded: a barge-in cancels this handler, but a REFER under way must finish.
        transfer = asyncio.ensure_future(self._hand_over(number, announced=announce))
        ok = await asyncio.shield(transfer)
        if ok:
            await params.result_callback(
                {"transferred": True}, properties=FunctionCallResultProperties(run_llm=False)
            )
        else:
            await params.result_callback(
                {
                    "transferred": False,
                    "error": "The transfer did not go through. Tell the person, and carry on.",
                }
            )

    async def _hand_over(self, number: str, *, announced: bool) -> bool:
        assert self.transfer is not None
        await self.host.finish_speaking(starts_within_s=_LINE_STARTS_WITHIN_S if announced else 0)
        try:
            async with asyncio.timeout(_TRANSFER_TIMEOUT_S):
                ok = await self.transfer(number)
        except Exception as exc:  # the carrier's trouble must not end the conversation
            log.warning("transfer failed", number=number, error=repr(exc))
            ok = False
        if ok:
            self.host.action(f"transfer_call: transferred to {number}")
            self.host.transferred(number)
        else:
            self.host.action(f"transfer_call: the transfer to {number} failed")
        return ok

    async def _call_http(self, tool: HttpTool, params: FunctionCallParams) -> None:
        self._called(params)
        # The model sets only the arguments the tool declares; with the call's own
        # variables around them, it cannot pose as another call or swap a secret.
        declared = tool.input_schema.get("properties") or {}
        values = {**self.variables, **{k: v for k, v in params.arguments.items() if k in declared}}
        if tool.speech:
            await params.llm.push_frame(TTSSpeakFrame(fill(tool.speech, values)))
        result: Any
        try:
            answer = await send(tool.request, values, allow_private=self.allow_private)
        except OutboundError as exc:
            result = {"error": str(exc)}
        else:
            if tool.request.response_data:
                result = {f.name: extract(answer, f.data) for f in tool.request.response_data}
                facts = {
                    f.name: (f.context, result[f.name])
                    for f in tool.request.response_data
                    if result[f.name] is not None
                }
                if facts:  # queued into the LLM ahead of the turn this result will start
                    delta = LLMSettings(system_instruction=self.host.learned(facts))
                    await params.llm.queue_frame(LLMUpdateSettingsFrame(delta=delta))
            else:
                result = answer
                text = _compact(answer, MAX_RESULT_CHARS + 1)
                if len(text) > MAX_RESULT_CHARS:
                    result = text[:MAX_RESULT_CHARS] + " …(cut short)"
        self.host.action(f"{tool.name} -> {_compact(result, _ACTION_CHARS)}")
        await params.result_callback(result)


class LiveInstructions(FrameProcessor):
    """Before each LLM turn, fetches `cache: false` dynamic data again and, if it
    changed, updates the LLM's system instruction (`instructions()` builds it)."""

    def __init__(self, dynamic: DynamicData, instructions: Callable[[], str]) -> None:
        super().__init__(name="live-instructions")
        self._dynamic = dynamic
        self._instructions = instructions

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction is FrameDirection.DOWNSTREAM:
            try:
                changed = await self._dynamic.refresh()
            except Exception:  # stale data beats a stalled conversation
                log.exception("refreshing dynamic data failed")
                changed = False
            if changed:
                delta = LLMSettings(system_instruction=self._instructions())
                await self.push_frame(LLMUpdateSettingsFrame(delta=delta))
        await self.push_frame(frame, direction)
