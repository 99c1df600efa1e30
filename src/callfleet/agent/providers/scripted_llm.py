"""The scripted policy: what the agent does when no LLM is configured.

It sits where the LLM would and answers each finished user turn with the next
line of the call's `script`; when the lines run out it says the closing line and
ends the call once that line has been spoken. (`first_sentence` is spoken by the
conversation controller before any of this.) Its replies travel as an LLM's do
(a full-response start, the text, a full-response end), so TTS, interruptions and
the context aggregators treat them exactly like a model's. Calls that use it are
labelled `model: "scripted"`: honest, deterministic, and enough to exercise
everything except the intelligence.
"""

from __future__ import annotations

from collections.abc import Sequence

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

__all__ = ["SCRIPTED_MODEL", "ScriptedPolicy", "say_as_llm"]

SCRIPTED_MODEL = "scripted"


async def say_as_llm(processor: FrameProcessor, text: str) -> None:
    """Push `text` downstream the way an LLM pushes a reply."""
    await processor.push_frame(LLMFullResponseStartFrame())
    await processor.push_frame(LLMTextFrame(text))
    await processor.push_frame(LLMFullResponseEndFrame())


class ScriptedPolicy(FrameProcessor):
    def __init__(self, *, lines: Sequence[str], closing_line: str) -> None:
        super().__init__(name="scripted-policy")
        self._lines = [line for line in lines if line.strip()]
        self._closing = closing_line
        self._line_index = 0
        self.finished = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.respond()
        else:
            await self.push_frame(frame, direction)

    async def respond(self) -> None:
        """Say the next line, or the closing line and then end the call."""
        if self.finished:
            return
        if self._line_index < len(self._lines):
            line = self._lines[self._line_index]
            self._line_index += 1
            await say_as_llm(self, line)
            return
        self.finished = True
        await say_as_llm(self, self._closing)
        # Travels up to the worker, which then sends an EndFrame down from the top:
        # it reaches TTS and the output after the closing line, so the line is heard.
        await self.push_frame(
            EndWorkerFrame(reason="scripted conversation finished"), FrameDirection.UPSTREAM
        )
