"""The line port: what a carrier hands to whatever talks on an answered call.

Telephony owns the call (signalling, the RTP stream, its clock); something else
owns the conversation. This module is the seam between them, and it knows nothing
of pipecat, speech or language models. The AI agent (`callfleet.agent.phone`)
implements it; a carrier that is given no `Talker` sends silence.

The contract:

- A carrier calls `Talker.prepare(request)` as it dials (it returns at once): the
  talker may get ready what it knows before answer (the agent synthesises its
  known lines while the phone rings).
- A carrier calls `Talker.answer(call)` once per answered call, before it reports
  the answer, and gets a `LineSession` for that call alone.
- The session is the call's audio in both directions, paced by the RTP clock:
  `feed(pcm)` receives each 20 ms frame of the callee's decoded audio (8 kHz,
  16-bit mono PCM) and `read()` gives the next 20 ms to send (or None for silence).
  Neither may block: they run on the media tick.
- `dtmf(digit)` receives each digit the callee pressed (RFC 4733 or SIP INFO).
- `run(ended)` holds the conversation. It returns when the talker hangs up (the
  carrier then sends BYE) or soon after `ended` is set (the callee hung up, the
  call's time ran out, the dispatcher stopped it); it never raises for the call's
  own reasons, and returns a `LineOutcome`. A carrier waits a bounded time for it
  after `ended` and records "the agent failed" when it raises or hangs.
- `AnsweredCall.transfer(number)` hands the call to a phone number (SIP REFER);
  True when the far end accepted, after which the call ends.
- `not_ready()` is None when a call answered now would hear the talker at once, else
  why not (the agent's engines are still loading); the dispatcher admits no call
  and `/readyz` answers 503 until it is None.
- `close()` releases what the talker holds for the whole process (models, child
  processes); a carrier calls it from its own `close()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from callfleet.telephony.carrier import AnsweredBy, DialRequest, EndedBy, TranscriptTurn

__all__ = ["AnsweredCall", "LineOutcome", "LineSession", "Talker"]


@dataclass(frozen=True)
class AnsweredCall:
    """One answered attempt, as the talker on the line needs to know it."""

    request: DialRequest
    """The attempt as dispatched: ids, numbers, `record`, `answered_by_enabled` and
    the call's fields (`params`), already validated at submission."""
    recording_path: Path | None
    """Where to write the stereo WAV when the call asked to be recorded; None: don't."""
    transfer: Callable[[str], Awaitable[bool]]
    """Hands the call to a phone number with a SIP REFER; True when accepted."""


@dataclass
class LineOutcome:
    """What the conversation produced; the carrier folds it into the `DialResult`."""

    transcript: list[TranscriptTurn] = field(default_factory=list)
    ended_by: EndedBy | None = None
    """ASSISTANT when the talker hung up; None when the call was ended from outside."""
    answered_by: AnsweredBy | None = None
    """Who answered, if the talker decided (answering-machine detection)."""
    recording_path: Path | None = None
    model: str | None = None
    """What held the conversation: the LLM's model name, or "scripted"."""
    error: str | None = None
    latency_ms: list[float] = field(default_factory=list)
    """Voice-to-voice delays measured on the line, one per reply."""
    opted_out: bool = False
    """The callee asked not to be called again (see `DialResult.opted_out`)."""


class LineSession(Protocol):
    """One answered call's audio and conversation (see the module's contract)."""

    def feed(self, pcm: bytes) -> None: ...

    def read(self) -> bytes | None: ...

    def dtmf(self, digit: str) -> None: ...

    async def run(self, ended: asyncio.Event) -> LineOutcome: ...


class Talker(Protocol):
    """What a carrier puts on answered calls: the AI agent, in production."""

    def describe(self) -> str: ...

    def not_ready(self) -> str | None:
        """None when it can talk on a call answered now; else why not."""
        ...

    def prepare(self, request: DialRequest) -> None:
        """The call is being dialled (must not block)."""
        ...

    def answer(self, call: AnsweredCall) -> LineSession: ...

    async def close(self) -> None: ...
