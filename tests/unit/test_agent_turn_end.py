"""When the callee's turn ends (`callfleet.agent.turn_end`): a first greeting at once, a
sentence left hanging not before the speech timeout."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

import callfleet.agent._pipecat  # noqa: F401  (pipecat's import warnings silenced first)

# isort: split

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, BaseTurnParams, EndOfTurnState
from pipecat.frames.frames import (
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import MetricsData
from pipecat.utils.asyncio.task_manager import TaskManager

from callfleet.agent.turn_end import CalleeTurnStop, is_bare_greeting, sounds_unfinished


@pytest.mark.parametrize(
    "text",
    [
        "Hello?",
        "Hello.",
        "hi",
        "Yes?",
        "Yeah, hello?",
        "Hi, Maria speaking.",
        "Good morning.",
        "Who's calling?",
        "Dana here.",
    ],
)
def test_a_person_s_short_greeting_ends_the_turn(text: str) -> None:
    assert is_bare_greeting(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Um",
        "So I was thinking",
        "Hi, you've reached Dana, leave a message.",  # a machine's words
        "Hello, I'm not available right now.",
        "Hello, this is Dana, and I was just about to call you back about it.",  # long
        "Thank you for calling",
        "Oh, hi, what can I?",  # the rest comes after a pause
        "Hello, um",
    ],
)
def test_anything_else_is_left_to_smart_turn(text: str) -> None:
    assert not is_bare_greeting(text)


@pytest.mark.parametrize(
    "text",
    [
        "Yes, that's me, and",
        "maybe next week, if",
        "Okay, so",
        "What can I",
        "Oh, hi, what can I?",  # how Whisper writes the fragment
        "I'd want to check with my wife first, before",
        "Well, I was thinking...",
        "Well, I was thinking\u2026",
        "I was going to say the",
        "Um",
        "Yes,",
        "I was-",
    ],
)
def test_a_sentence_left_hanging_sounds_unfinished(text: str) -> None:
    assert sounds_unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Yes, that's me.",
        "I think so.",
        "I've heard that before.",
        "I'd love to.",
        "What is this about?",
        "What can I do for you?",
        "Who is it for?",
        "Right, well, thanks.",
        "Sure, that works for me.",
        "Hold on.",
    ],
)
def test_a_finished_sentence_does_not(text: str) -> None:
    assert not sounds_unfinished(text)


# --- the strategy: a hanging pause waits up to the speech timeout ------------------


class _SaysComplete(BaseTurnAnalyzer):
    """A turn analyzer that hears every pause as the end of the turn."""

    @property
    def speech_triggered(self) -> bool:
        return False

    @property
    def params(self) -> BaseTurnParams:
        return BaseTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        return EndOfTurnState.COMPLETE, None

    def clear(self) -> None:
        pass


async def _strategy(max_wait_s: float) -> tuple[CalleeTurnStop, list[float]]:
    stop = CalleeTurnStop(turn_analyzer=_SaysComplete(), max_wait_s=max_wait_s)
    await stop.setup(
        SimpleNamespace(  # type: ignore[arg-type]  # what the strategy reads of the setup
            task_manager=TaskManager(loop=asyncio.get_running_loop()),
            audio_in_sample_rate=16000,
        )
    )
    ended: list[float] = []

    @stop.event_handler("on_user_turn_stopped")
    async def _stopped(*_: Any) -> None:
        ended.append(time.monotonic())

    stop._first_turn = False  # a turn after the greeting
    return stop, ended


async def _pause(stop: CalleeTurnStop, words: str) -> float:
    """The callee stops (VAD's 0.4 s of quiet) and the segment's words arrive."""
    paused = time.monotonic()
    await stop.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.4, timestamp=time.time()))
    await stop.process_frame(
        TranscriptionFrame(words, user_id="callee", timestamp="", finalized=True)
    )
    return paused


def test_a_finished_sentence_ends_the_turn_at_the_pause() -> None:
    asyncio.run(_a_finished_sentence_ends_the_turn_at_the_pause())


async def _a_finished_sentence_ends_the_turn_at_the_pause() -> None:
    stop, ended = await _strategy(max_wait_s=1.4)
    paused = await _pause(stop, "Sure, that works for me.")
    assert ended and ended[0] - paused < 0.5  # a hold would last 1.0 s


def test_a_hanging_sentence_waits_out_the_speech_timeout() -> None:
    asyncio.run(_a_hanging_sentence_waits_out_the_speech_timeout())


async def _a_hanging_sentence_waits_out_the_speech_timeout() -> None:
    stop, ended = await _strategy(max_wait_s=1.4)
    paused = await _pause(stop, "I'd want to check with my wife first, before")
    await asyncio.sleep(0.05)
    assert not ended  # still the callee's turn
    await asyncio.sleep(1.5)
    # 1.4 s after the speech ended, which VAD reported 0.4 s late: 1.0 s after the pause
    assert len(ended) == 1 and 0.8 < ended[0] - paused < 1.5


def test_a_hanging_sentence_continued_is_one_turn() -> None:
    asyncio.run(_a_hanging_sentence_continued_is_one_turn())


async def _a_hanging_sentence_continued_is_one_turn() -> None:
    stop, ended = await _strategy(max_wait_s=1.4)
    await _pause(stop, "Okay, so")
    await asyncio.sleep(0.05)
    await stop.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
    await asyncio.sleep(1.2)
    assert not ended  # the hold (1.0 s) was dropped when the callee spoke again
    paused = await _pause(stop, "that's everything then. Goodbye.")
    assert len(ended) == 1 and ended[0] - paused < 0.5
