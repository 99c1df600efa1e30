"""The carrier port: how the dispatcher places one call and learns how it ended.

A carrier is whatever turns a `DialRequest` into a phone call: the built-in phone
simulator's outcome rules (no media), or the SIP client towards a trunk. The
dispatcher knows nothing else about telephony. A carrier must:

- report progress through `CallEvents` (ringing, answered) as it happens;
- end the call promptly when `DialRequest.hangup` is set (CANCEL while ringing, BYE
  once answered) and still return a `DialResult` saying how it ended;
- never raise for an outcome of the call (busy, declined, a network failure):
  those are results. It raises only when it is cancelled (process shutdown).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from callfleet.domain.states import AnsweredBy, EndedBy, Outcome

__all__ = [
    "AnsweredBy",
    "CallEvents",
    "Carrier",
    "DialRequest",
    "DialResult",
    "EndedBy",
    "NullEvents",
    "Outcome",
]


@dataclass(frozen=True)
class TrunkTarget:
    """Where and how to send the INVITE (filled from the trunk of the call's `from`)."""

    host: str
    port: int = 5060
    transport: str = "udp"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    from_domain: str | None = None


@dataclass
class DialRequest:
    """Everything a carrier needs to place one attempt of one call."""

    call_id: str
    attempt: int
    to_number: str
    from_number: str | None
    ring_timeout_s: float = 30.0
    max_duration_s: float = 30 * 60.0
    answered_by_enabled: bool = False
    record: bool = False
    trunk: TrunkTarget | None = None
    params: dict[str, object] = field(default_factory=dict)
    hangup: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the dispatcher to end the call (stop, watchdog, shutdown)."""


@dataclass
class TranscriptTurn:
    user: str  # user | assistant | robot | agent-action
    text: str
    at: datetime


@dataclass
class DialResult:
    """How one attempt ended."""

    outcome: Outcome
    answered_by: AnsweredBy | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: EndedBy | None = None
    error_message: str | None = None
    sip_code: int | None = None
    retry_after_s: float | None = None
    """The network asked us to try later (503 Retry-After): not a used attempt."""
    transcript: list[TranscriptTurn] = field(default_factory=list)
    recording_path: str | None = None
    endpoint: str | None = None
    model: str | None = None
    """What ran the conversation: the LLM's model name, or "scripted"; None without an agent."""
    latency_ms: list[float] = field(default_factory=list)
    """The agent's measured voice-to-voice delays on this call, one per reply."""
    opted_out: bool = False
    """The callee asked not to be called again (in words or on the keypad): the
    dispatcher puts the number on the account's do-not-call list as the call ends."""


class CallEvents(Protocol):
    """Progress callbacks; each is awaited, so it may write to the store."""

    async def ringing(self) -> None: ...

    async def answered(self) -> None: ...


class NullEvents:
    """Events sink for tests and tools that do not track progress."""

    async def ringing(self) -> None:
        return None

    async def answered(self) -> None:
        return None


class Carrier(Protocol):
    """Places calls. `describe()` says what it is, for logs and `endpoint_url`;
    `close()` releases its sockets and what it runs on calls (the agent), once, when
    the process stops."""

    def describe(self) -> str: ...

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult: ...

    async def close(self) -> None: ...
