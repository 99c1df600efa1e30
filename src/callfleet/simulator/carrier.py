"""A carrier that plays the simulator's rules with no media and no SIP.

`SimulatedCarrier` carries a call through its whole life cycle (ringing, answered
or not, talking, hung up) from `callfleet.simulator.rules` alone, for tests and
demos that need outcomes but no audio. The default carrier is `sip`; calls without
a trunk go to the SIP phone simulator (`sip_server.SipSimulatorCarrier`). Calls
carried here are labelled plainly as simulated wherever a call's carrier shows.
"""

from __future__ import annotations

import asyncio
import contextlib

from callfleet.clock import utcnow
from callfleet.simulator.rules import Behaviour, persona_for
from callfleet.telephony.carrier import (
    AnsweredBy,
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
    TranscriptTurn,
)

__all__ = ["SimulatedCarrier"]

ENDPOINT = "simulator://no-media"


class SimulatedCarrier:
    """Plays each number's behaviour; `time_scale` 0 makes every outcome instant."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale

    def describe(self) -> str:
        return (
            "phone simulator, no media (test numbers +1 NPA 555-01XX; "
            f"time scale {self.time_scale:g})"
        )

    async def _wait(self, seconds: float, hangup: asyncio.Event) -> bool:
        """Sleep `seconds` (scaled); True if the caller hung up meanwhile."""
        if hangup.is_set():
            return True
        delay = seconds * self.time_scale
        if delay <= 0:
            await asyncio.sleep(0)
            return hangup.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hangup.wait(), delay)
        return hangup.is_set()

    async def close(self) -> None:
        """Nothing to release: no sockets, no media."""

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        persona = persona_for(request.to_number)
        hangup = request.hangup
        behaviour = persona.behaviour
        if behaviour == Behaviour.UNKNOWN:
            return DialResult(
                Outcome.FAILED,
                error_message=(
                    f"The phone simulator has no phone at {request.to_number}: its numbers are "
                    "+1 NPA 555-0100 to 555-0199. Configure a SIP trunk to call real numbers."
                ),
                sip_code=404,
                endpoint=ENDPOINT,
            )
        if behaviour == Behaviour.UNREACHABLE:
            await self._wait(persona.ring_s, hangup)
            return DialResult(
                Outcome.FAILED,
                error_message="SIP 502 Bad Gateway: the network could not reach the "
                "number (simulated).",
                sip_code=502,
                endpoint=ENDPOINT,
            )
        if behaviour == Behaviour.BUSY:
            if await self._wait(persona.ring_s, hangup):
                return DialResult(Outcome.CANCELED, endpoint=ENDPOINT)
            return DialResult(
                Outcome.BUSY, error_message="SIP 486 Busy Here", sip_code=486, endpoint=ENDPOINT
            )
        await events.ringing()
        if behaviour == Behaviour.NO_ANSWER:
            if await self._wait(request.ring_timeout_s, hangup):
                return DialResult(Outcome.CANCELED, sip_code=487, endpoint=ENDPOINT)
            no_answer = AnsweredBy.NO_ANSWER if request.answered_by_enabled else None
            return DialResult(
                Outcome.NO_ANSWER,
                answered_by=no_answer,
                error_message=f"No answer after {request.ring_timeout_s:g} s of ringing.",
                sip_code=487,
                endpoint=ENDPOINT,
            )
        if await self._wait(min(persona.ring_s, request.ring_timeout_s), hangup):
            return DialResult(Outcome.CANCELED, sip_code=487, endpoint=ENDPOINT)
        if behaviour == Behaviour.DECLINE:
            return DialResult(
                Outcome.DECLINED, error_message="SIP 603 Decline", sip_code=603, endpoint=ENDPOINT
            )
        answered = utcnow()
        await events.answered()
        if behaviour == Behaviour.VOICEMAIL:
            talk = persona.greeting_s + 2.0
            note = "Simulated call (no media): a voicemail greeting, a beep, then silence."
        else:
            talk = persona.talk_s
            note = f"Simulated call (no media): a person answered and talked for {talk:g} s."
        talk = min(talk, request.max_duration_s)
        hung_up = await self._wait(talk, hangup)
        voicemail = behaviour == Behaviour.VOICEMAIL
        answered_by = None
        if request.answered_by_enabled:
            answered_by = AnsweredBy.VOICEMAIL if voicemail else AnsweredBy.HUMAN
        return DialResult(
            Outcome.VOICEMAIL if voicemail and request.answered_by_enabled else Outcome.COMPLETED,
            answered_by=answered_by,
            answered_at=answered,
            ended_at=utcnow(),
            ended_by=EndedBy.ASSISTANT if hung_up or voicemail else EndedBy.USER,
            sip_code=200,
            transcript=[TranscriptTurn("robot", note, answered)],
            endpoint=ENDPOINT,
        )
