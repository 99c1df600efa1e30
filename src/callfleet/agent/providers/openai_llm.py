"""The LLM: any OpenAI-compatible chat-completions endpoint, streamed.

OpenAI, Groq, Together, vLLM, Ollama and llama.cpp's server all speak this
protocol; pipecat's `OpenAILLMService` streams the reply token by token, and
TTS starts on the first complete sentence. On a barge-in pipecat cancels the
stream. The call's prompt becomes the system instruction, and its temperature
applies when given. The call's tools (`callfleet.agent.tools`) are registered on
the service by the conversation; `spoke_this_response` tells a tool whether the
model said anything before calling it.
"""

from __future__ import annotations

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.frames.frames import Frame, LLMFullResponseStartFrame, LLMTextFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from callfleet.agent.options import AgentOptions, ProviderSettings

__all__ = ["CallLLMService", "openai_compatible_llm"]


class CallLLMService(OpenAILLMService):
    """pipecat's OpenAI service that also closes its HTTP client when the call ends
    (pipecat 1.14 leaves the keep-alive connection open)."""

    spoke_this_response = False
    """Whether the response being streamed (or the last one) had any words in it."""

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
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key or "not-needed",
        settings=OpenAILLMService.Settings(
            model=options.model or settings.llm_model or "default",
            system_instruction=options.prompt or None,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
        ),
    )
