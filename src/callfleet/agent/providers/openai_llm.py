"""The LLM: any OpenAI-compatible chat-completions endpoint, streamed.

OpenAI, Groq, Together, vLLM, Ollama and llama.cpp's server all speak this
protocol; pipecat's `OpenAILLMService` streams the reply token by token, and
TTS starts on the first complete sentence. On a barge-in pipecat cancels the
stream. The call's prompt becomes the system instruction, and its temperature
applies when given. The call's tools (`callfleet.agent.tools`) are registered on
the service by the conversation; `spoke_this_response` tells a tool whether the
model said anything before calling it.

A request that fails (no answer within `llm_timeout_s`, a 5xx, a refused connection)
is retried once by the OpenAI client; if that fails too, the service says the
fallback line, tells the conversation (`on_failure`, for the outcome's error) and
ends the call itself, as `end_call` does, rather than leaving the callee in silence.
"""

from __future__ import annotations

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from collections.abc import Callable
from typing import Any

import structlog
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from callfleet.agent.options import AgentOptions, ProviderSettings

__all__ = ["LLM_RETRIES", "CallLLMService", "openai_compatible_llm"]

log = structlog.get_logger(__name__)

LLM_RETRIES = 1
"""The OpenAI client retries a failed request (timeout, 429, 5xx, no connection) once."""


class CallLLMService(OpenAILLMService):
    """pipecat's OpenAI service with a timeout, one retry and a fallback line, that also
    closes its HTTP client when the call ends (pipecat 1.14 leaves the keep-alive
    connection open)."""

    spoke_this_response = False
    """Whether the response being streamed (or the last one) had any words in it."""

    def __init__(self, *, timeout_s: float, fallback_line: str, **kwargs: Any) -> None:
        self.timeout_s = timeout_s  # read by create_client, which the base __init__ calls
        self.fallback_line = fallback_line
        self.on_failure: Callable[[str], None] | None = None
        """Told why, once, when the LLM has failed and the call is being ended."""
        self._failed = False
        self._completing = False
        super().__init__(**kwargs)

    def create_client(
        self,
        api_key: Any = None,
        base_url: Any = None,
        organization: Any = None,
        project: Any = None,
        default_headers: Any = None,
        **kwargs: Any,
    ) -> AsyncOpenAI:
        """pipecat's client, with our timeout and retry count (the OpenAI client's
        defaults are 10 minutes and two retries: a stalled LLM held the call silent)."""
        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            timeout=self.timeout_s,
            max_retries=LLM_RETRIES,
            http_client=DefaultAsyncHttpxClient(),
            default_headers=default_headers,
        )

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        completing = isinstance(frame, LLMContextFrame)
        self._completing = completing
        try:
            await super().process_frame(frame, direction)
        finally:
            if completing:
                self._completing = False

    async def push_error(
        self, error_msg: str, exception: Exception | None = None, *args: Any, **kwargs: Any
    ) -> None:
        """A completion that failed after its retry: the fallback line, then the end.
        Other errors (a tool's, say) go on to pipecat as before."""
        if not self._completing:
            await super().push_error(error_msg, exception, *args, **kwargs)
            return
        log.warning("the LLM failed on a call", error=error_msg[:300])
        if self._failed:
            return
        self._failed = True
        kind = type(exception).__name__ if exception is not None else "error"
        status = getattr(exception, "status_code", None)
        why = f"the LLM did not answer ({kind}{f', HTTP {status}' if status else ''})"
        if self.on_failure is not None:
            self.on_failure(why)
        await self.push_frame(TTSSpeakFrame(self.fallback_line))
        # Upstream to the worker, which sends an EndFrame down from the top: it reaches
        # TTS behind the fallback line, so the callee hears it before the hang-up.
        await self.push_frame(EndWorkerFrame(reason=why), FrameDirection.UPSTREAM)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if isinstance(frame, LLMFullResponseStartFrame):
            self.spoke_this_response = False
        elif isinstance(frame, LLMTextFrame) and frame.text.strip():
            self.spoke_this_response = True
        await super().push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]  # unannotated in pipecat
        await self._client.close()


def openai_compatible_llm(settings: ProviderSettings, options: AgentOptions) -> CallLLMService:
    if not settings.llm_base_url:
        raise ValueError("no LLM endpoint configured (CALLFLEET_LLM_BASE_URL)")
    return CallLLMService(
        timeout_s=settings.llm_timeout_s,
        fallback_line=settings.llm_fallback_line,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key or "not-needed",
        settings=OpenAILLMService.Settings(
            model=options.model or settings.llm_model or "default",
            system_instruction=options.prompt or None,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
        ),
    )
