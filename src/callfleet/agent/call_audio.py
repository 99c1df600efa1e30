"""`CallAudio`: the meeting point of one call's RTP stream and its agent.

The carrier side is two plain callbacks that match `RtpSession` exactly:
`feed(pcm)` is its `on_audio` (the callee's decoded audio, one 20 ms frame of
8 kHz 16-bit mono PCM per tick) and `read()` makes it an `AudioSource` (the next
20 ms of the agent's voice, or comfort silence when the agent is quiet). The RTP
clock is therefore the only clock that paces the agent's output: nothing here
sleeps on its own timer, so the stream cannot drift or burst.

The agent side is asynchronous: `frames()` yields the callee's frames, `play()`
queues agent audio and waits while more than `max_queued_ms` is already queued
(backpressure that makes the pipeline's output behave like a sound card), and
`clear_playout()` drops what is queued when the callee barges in.

A `StereoRecorder` attached as `recorder` gets one (callee, agent) pair per tick.

It also measures the call's voice-to-voice latency as the callee lives it: from
the end of the callee's speech (the last loud frame received, by energy) to the
first loud frame of the agent's reply leaving on the RTP clock (a voice's quiet
lead-in does not count as an answer). Only turns
where the callee spoke for at least `_MIN_TURN_S` count, and only when the agent
was quiet meanwhile (a reply, not the agent carrying on).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

__all__ = ["FRAME_BYTES", "FRAME_S", "SAMPLE_RATE", "CallAudio", "FrameRecorder"]

SAMPLE_RATE = 8000
FRAME_S = 0.020
FRAME_BYTES = 320
_SILENCE = bytes(FRAME_BYTES)
_MAX_INBOUND_FRAMES = 500
"""10 s of callee audio: beyond that the agent has stalled and the oldest is dropped."""
_SPEECH_RMS = 400.0
"""Frame energy (16-bit RMS) above which the callee counts as speaking (about -38 dBFS)."""
_MIN_TURN_S = 0.3
_MAX_LATENCY_S = 10.0
"""Longer gaps are the agent choosing silence, not latency."""


class FrameRecorder(Protocol):
    def write(self, callee: bytes, agent: bytes) -> None:
        """One tick: 20 ms heard from the callee and 20 ms sent by the agent."""
        ...


class CallAudio:
    """Both directions of a call's audio, in 20 ms frames of 8 kHz 16-bit mono PCM."""

    def __init__(self, *, max_queued_ms: int = 60) -> None:
        self.max_queued_ms = max_queued_ms
        self.recorder: FrameRecorder | None = None
        self.on_agent_audio: Callable[[float], None] | None = None
        """Called with `time.monotonic()` when a frame of agent speech starts playing
        after silence (the start of a talk spurt): what latency is measured against."""
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self._inbound: deque[bytes] = deque()
        self._heard: deque[bytes] = deque(maxlen=4)
        self._arrived = asyncio.Event()
        self._closed = False
        self._outbound = bytearray()
        self._space = asyncio.Event()
        self._space.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._talking = False
        self.latencies_ms: list[float] = []
        """One voice-to-voice delay per agent reply, in milliseconds."""
        self._speech_frames = 0
        self._last_loud: float | None = None
        self.digits: list[str] = []
        """Keypad digits the callee pressed, in order (RFC 4733 or SIP INFO)."""
        self.on_digit: Callable[[str], None] | None = None
        """Called with each digit as it arrives, once the agent listens for them."""

    # -- the carrier's side ----------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """The callee's next 20 ms (`RtpSession.on_audio`)."""
        if self._closed:
            return
        if len(self._inbound) >= _MAX_INBOUND_FRAMES:
            self._inbound.popleft()
            self.frames_dropped += 1
        self._inbound.append(pcm)
        self._heard.append(pcm)
        if not self._talking and _rms(pcm) >= _SPEECH_RMS:
            self._speech_frames += 1
            self._last_loud = time.monotonic()
        self.frames_in += 1
        self._arrived.set()

    def dtmf(self, digit: str) -> None:
        """A keypad digit the callee pressed (`LineSession.dtmf`)."""
        if self._closed:
            return
        self.digits.append(digit)
        if self.on_digit is not None:
            self.on_digit(digit)

    def read(self) -> bytes:
        """The agent's next 20 ms (`AudioSource.read`): speech, or comfort silence."""
        out = self._outbound
        if out:
            frame = bytes(out[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\x00")
            del out[:FRAME_BYTES]
            if not self._talking:
                self._talking = True
                if self.on_agent_audio is not None:
                    self.on_agent_audio(time.monotonic())
            if self._speech_frames and _rms(frame) >= _SPEECH_RMS:
                self._measure(time.monotonic())  # the first sound of the reply
        else:
            frame = _SILENCE
            self._talking = False
        self.frames_out += 1
        self._update_space()
        if self.recorder is not None:
            heard = self._heard.popleft() if self._heard else _SILENCE
            self.recorder.write(heard, frame)
        return frame

    def _measure(self, onset: float) -> None:
        """The agent's voice is heard: if it answers a turn of the callee, record the gap."""
        spoke = self._speech_frames * FRAME_S >= _MIN_TURN_S
        last = self._last_loud
        self._speech_frames = 0
        if spoke and last is not None:
            gap = onset - (last + FRAME_S)
            if 0 < gap <= _MAX_LATENCY_S:
                self.latencies_ms.append(round(gap * 1000, 1))

    def close(self) -> None:
        """The call is over: `frames()` ends once what was received is consumed."""
        self._closed = True
        self._arrived.set()
        self._space.set()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the agent's side ------------------------------------------------------------

    async def frames(self) -> AsyncIterator[bytes]:
        """The callee's audio, frame by frame, until `close()`."""
        while True:
            while self._inbound:
                yield self._inbound.popleft()
            if self._closed:
                return
            self._arrived.clear()
            await self._arrived.wait()

    async def play(self, pcm: bytes) -> None:
        """Queue agent audio; wait while more than `max_queued_ms` is already queued."""
        if self._closed:
            return
        self._outbound += pcm
        self._update_space()
        while not self._space.is_set():
            await self._space.wait()

    def clear_playout(self) -> float:
        """Drop the queued agent audio (barge-in); returns how many ms were dropped."""
        dropped = len(self._outbound) / (2 * SAMPLE_RATE) * 1000
        self._outbound.clear()
        self._update_space()
        return dropped

    @property
    def queued_ms(self) -> float:
        return len(self._outbound) / (2 * SAMPLE_RATE) * 1000

    async def drained(self) -> None:
        """Until every queued frame of agent audio has been read (or the call closed)."""
        while self._outbound and not self._closed:
            self._empty.clear()
            await self._empty.wait()

    def _update_space(self) -> None:
        limit = self.max_queued_ms * 2 * SAMPLE_RATE // 1000
        if len(self._outbound) <= limit or self._closed:
            self._space.set()
        else:
            self._space.clear()
        if not self._outbound:
            self._empty.set()


def _rms(pcm: bytes) -> float:
    """Root mean square of 16-bit little-endian PCM."""
    samples = memoryview(pcm).cast("h")
    if not samples:
        return 0.0
    return float((sum(x * x for x in samples) / len(samples)) ** 0.5)
