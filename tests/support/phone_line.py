"""`PhoneLine`: the callee's end of a `CallAudio`, playing a script.

It ticks every 20 ms as an RTP session does, plays a script of `Say` /
`WaitForAgent` / `Pause` steps, records both directions and measures the
voice-to-voice latency of each reply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from callfleet import synth
from callfleet.agent.call_audio import FRAME_BYTES, FRAME_S, CallAudio

__all__ = ["Pause", "PhoneLine", "Reply", "Say", "WaitForAgent"]


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
        self.utterances = 0
        self.cut_in_lines: list[str] = []
        """The labels of the utterances during which the agent began to talk while the
        callee was still mid-utterance (in a pause inside a line, before its last word)."""
        self._cut_in = False
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
                self.utterances += 1
                self._cut_in = False
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
            if len(self._pending) > self._trailing_quiet and not self._cut_in:
                self.cut_in_lines.append(self._label)
                self._cut_in = True
            if self._said_end is not None and self.replies:
                self.replies[-1].latency_s = round(self._now - self._said_end, 3)
                self._said_end = None
        elif not loud and self._talking:
            self._talking = False
            self._quiet_since = self._now
