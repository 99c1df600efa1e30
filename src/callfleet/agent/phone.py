"""`AgentLine`: the AI agent as telephony's `Talker` (`callfleet.telephony.line`).

Telephony hands each answered call to a `Talker` and knows nothing else of the
agent. This adapter is the only place where the two meet: it turns the carrier's
`AnsweredCall` into the agent's own terms (a `CallAudio` for the RTP stream's
hooks, an `AgentCall` with the call's options) and the agent's `AgentOutcome`
back into a `LineOutcome`.
"""

from __future__ import annotations

import asyncio

import structlog

from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, CallMedia
from callfleet.telephony.carrier import DialRequest
from callfleet.telephony.line import AnsweredCall, LineOutcome

__all__ = ["AgentLine", "AgentLineSession"]

log = structlog.get_logger(__name__)


class AgentLine:
    """Puts `media` (a loaded `PipecatAgent`, or the process's `AgentRuntime`) on
    every answered call."""

    def __init__(self, media: CallMedia) -> None:
        self.media = media

    def describe(self) -> str:
        return self.media.describe()

    def not_ready(self) -> str | None:
        return self.media.not_ready()

    def prepare(self, request: DialRequest) -> None:
        """Never raises: ready audio only saves time, and the call goes on without it."""
        try:
            self.media.prepare(_options(request))
        except Exception:
            log.warning(
                "could not prepare the call's audio", call_id=request.call_id, exc_info=True
            )

    def answer(self, call: AnsweredCall) -> AgentLineSession:
        return AgentLineSession(self.media, call)

    async def close(self) -> None:
        await self.media.close()


def _options(request: DialRequest) -> AgentOptions:
    params = dict(request.params)
    params["record"] = request.record
    params["answered_by_enabled"] = request.answered_by_enabled
    return AgentOptions.from_params(params)


class AgentLineSession:
    """One answered call: the RTP stream's hooks feed its `CallAudio`."""

    def __init__(self, media: CallMedia, call: AnsweredCall) -> None:
        request = call.request
        self.media = media
        self.audio = CallAudio()
        self.job = AgentCall(
            call_id=request.call_id,
            options=_options(request),
            recording_path=call.recording_path,
            transfer=call.transfer,
        )

    def feed(self, pcm: bytes) -> None:
        self.audio.feed(pcm)

    def read(self) -> bytes:
        return self.audio.read()

    def dtmf(self, digit: str) -> None:
        log.info("dtmf", call_id=self.job.call_id, digit=digit)
        self.audio.dtmf(digit)  # the agent acts on its `opt_out_digit`

    async def run(self, ended: asyncio.Event) -> LineOutcome:
        outcome = await self.media.run(self.job, self.audio, ended)
        return LineOutcome(
            transcript=list(outcome.transcript),
            ended_by=outcome.ended_by,
            answered_by=outcome.answered_by,
            recording_path=outcome.recording_path,
            model=outcome.model,
            error=outcome.error,
            latency_ms=list(self.audio.latencies_ms),
            opted_out=outcome.opted_out,
        )
