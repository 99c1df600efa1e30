"""`SipCarrier`: the carrier port (`callfleet.telephony.carrier`) over our SIP client.

It places each `DialRequest` as an INVITE to the request's trunk, reports ringing
and answer through `CallEvents`, and once answered runs the call's media: the AI
agent (`media`, a `callfleet.agent.CallMedia`) on the RTP stream, or silence when
there is none (load tests). The call lasts until the agent hangs up, the remote
hangs up, `request.hangup` is set, `max_duration_s` passes or the media goes dead.
The agent's outcome (transcript, recording, `answered_by`, latency) becomes the
`DialResult`. Outcomes of the call are returned, never raised; if the task is
cancelled (shutdown) the call is still released (CANCEL or BYE) before the
cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from callfleet.telephony.carrier import (
    AnsweredBy,
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
    TrunkTarget,
)
from callfleet.telephony.rtp.session import RtpSession
from callfleet.telephony.sip.auth import Credentials
from callfleet.telephony.sip.call import Call, EndReason
from callfleet.telephony.sip.client import SipClient, SipClientConfig
from callfleet.telephony.sip.errors import SipError
from callfleet.telephony.sip.invite import InviteResult
from callfleet.telephony.sip.outcome import failed_invite_result
from callfleet.telephony.sip.transaction import SipTimers

if TYPE_CHECKING:
    from callfleet.agent.call_audio import CallAudio
    from callfleet.agent.session import AgentOutcome, CallMedia

__all__ = ["CALL_HEADER", "SipCarrier", "SipCarrierConfig"]

log = logging.getLogger(__name__)
_RELEASE_TIMEOUT_S = 5.0
_AGENT_STOP_S = 15.0
"""How long an agent gets to wrap up (close its recording) after the call ended."""
CALL_HEADER = "X-Callfleet-Call"
"""Sent on every INVITE: `<call id>;attempt=<n>`, so the far end's records (the
simulator's, a carrier's CDRs) tie each INVITE to one attempt of one call."""


@dataclass(frozen=True)
class SipCarrierConfig:
    bind_host: str = "127.0.0.1"
    advertised_host: str | None = None
    """The address the trunk reaches us at (SIP and RTP); defaults to bind_host."""
    rtp_port_range: tuple[int, int] = (16384, 32766)
    inactivity_timeout_s: float = 30.0
    session_expires_s: int | None = 1800
    user_agent: str = "callfleet"
    timers: SipTimers = field(default_factory=SipTimers)
    recordings_dir: Path | None = None
    """Where the agent writes recordings of calls sent with `record: true`."""


class SipCarrier:
    def __init__(
        self, config: SipCarrierConfig | None = None, *, media: CallMedia | None = None
    ) -> None:
        self.config = config or SipCarrierConfig()
        self.media = media
        """The agent on answered calls; None sends silence."""
        self._clients: dict[str, SipClient] = {}
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"sip:{self.config.advertised_host or self.config.bind_host}"

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        close = getattr(self.media, "close", None)
        if close is not None:
            await close()

    async def _client(self, transport: str) -> SipClient:
        kind = transport.lower()
        async with self._lock:
            client = self._clients.get(kind)
            if client is None:
                cfg = self.config
                client = SipClient(SipClientConfig(
                    bind_host=cfg.bind_host, transport=kind, advertised_host=cfg.advertised_host,
                    user_agent=cfg.user_agent, timers=cfg.timers,
                    session_expires_s=cfg.session_expires_s,
                ))  # fmt: skip
                await client.start()
                self._clients[kind] = client
            return client

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        trunk = request.trunk
        if trunk is None:
            return self._failed("no SIP trunk configured for this call")
        try:
            client = await self._client(trunk.transport)
            proxy = await client.resolve(trunk.host, trunk.port)
            rtp = await RtpSession.open(
                self.config.bind_host, port_range=self.config.rtp_port_range,
                inactivity_timeout_s=self.config.inactivity_timeout_s,
            )  # fmt: skip
        except (SipError, OSError) as exc:
            return self._failed(f"cannot start the call: {exc}")
        try:
            result = await self._invite(client, rtp, request, events, trunk, proxy)
            if result.call is None:
                return failed_invite_result(result, endpoint=self.describe())
            return await self._converse(result.call, rtp, request, events, trunk)
        except (SipError, OSError) as exc:
            return self._failed(f"SIP error: {exc}")
        finally:
            await rtp.close()

    async def _invite(
        self,
        client: SipClient,
        rtp: RtpSession,
        request: DialRequest,
        events: CallEvents,
        trunk: TrunkTarget,
        proxy: tuple[str, int],
    ) -> InviteResult:
        stop = asyncio.Event()
        mirror = asyncio.create_task(_mirror(request.hangup, stop))
        suffix = ";transport=tcp" if trunk.transport.lower() == "tcp" else ""
        number = "".join(request.to_number.split())
        caller = "".join((request.from_number or "anonymous").split())
        credentials = None
        if trunk.username and trunk.password:
            credentials = Credentials(trunk.username, trunk.password)
        invite = asyncio.create_task(client.invite(
            f"sip:{number}@{trunk.host}:{trunk.port}{suffix}", media=rtp,
            from_uri=f"sip:{caller}@{trunk.from_domain or trunk.host}",
            credentials=credentials, ring_timeout_s=request.ring_timeout_s, hangup=stop,
            on_ringing=events.ringing, proxy=proxy,
            headers=[(CALL_HEADER, f"{request.call_id};attempt={request.attempt}")],
        ))  # fmt: skip
        try:
            return await asyncio.shield(invite)
        except asyncio.CancelledError:
            stop.set()  # CANCEL (or BYE a late 2xx) before shutting down
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                    await invite
            raise
        finally:
            mirror.cancel()

    async def _converse(
        self,
        call: Call,
        rtp: RtpSession,
        request: DialRequest,
        events: CallEvents,
        trunk: TrunkTarget,
    ) -> DialResult:
        answered_at = datetime.now(UTC)
        error: str | None = None
        agent: asyncio.Task[AgentOutcome] | None = None
        audio: CallAudio | None = None
        outcome: AgentOutcome | None = None
        ended = asyncio.Event()
        try:
            if self.media is not None:
                agent, audio = self._start_agent(call, rtp, request, trunk, ended)
            await events.answered()
            waits: dict[str, asyncio.Future[object]] = {
                "remote": asyncio.ensure_future(call.ended.wait()),
                "hangup": asyncio.ensure_future(request.hangup.wait()),
                "dead": asyncio.ensure_future(rtp.inactive.wait()),
            }
            if agent is not None:
                waits["agent"] = agent  # type: ignore[assignment]
            try:
                done, _ = await asyncio.wait(
                    waits.values(), timeout=request.max_duration_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
            finally:
                for name, fut in waits.items():
                    if name != "agent":
                        fut.cancel()
            if waits["dead"] in done and not call.ended.is_set():
                error = "media timeout: no RTP from the remote"
            if agent is not None:
                ended.set()
                outcome = await self._agent_outcome(agent, request.call_id)
        finally:
            if agent is not None and not agent.done():
                ended.set()
                agent.cancel()
            await asyncio.shield(call.hangup())
            await call.aclose()
        result = self._result(call, request, answered_at, error, outcome)
        if audio is not None and outcome is not None:
            result.latency_ms = list(audio.latencies_ms)
        return result

    def _start_agent(
        self,
        call: Call,
        rtp: RtpSession,
        request: DialRequest,
        trunk: TrunkTarget,
        ended: asyncio.Event,
    ) -> tuple[asyncio.Task[AgentOutcome], CallAudio]:
        """Put the agent on the line: the RTP stream's two hooks feed its `CallAudio`."""
        from callfleet.agent.call_audio import CallAudio
        from callfleet.agent.options import AgentOptions
        from callfleet.agent.session import AgentCall

        assert self.media is not None
        audio = CallAudio()
        rtp.on_audio = audio.feed
        rtp.source = audio
        params = dict(request.params)
        params["record"] = request.record
        params["answered_by_enabled"] = request.answered_by_enabled
        recording = None
        if request.record and self.config.recordings_dir is not None:
            name = re.sub(r"[^A-Za-z0-9_-]", "_", request.call_id)
            recording = self.config.recordings_dir / f"{name}-{request.attempt}.wav"

        async def transfer(number: str) -> bool:
            plain = "".join(number.split())
            return await call.refer(f"sip:{plain}@{trunk.host}:{trunk.port}")

        job = AgentCall(
            call_id=request.call_id,
            options=AgentOptions.from_params(params),
            recording_path=recording,
            transfer=transfer,
        )
        task = asyncio.create_task(self.media.run(job, audio, ended), name=f"agent-{job.call_id}")
        return task, audio

    async def _agent_outcome(
        self, agent: asyncio.Task[AgentOutcome], call_id: str
    ) -> AgentOutcome | None:
        try:
            async with asyncio.timeout(_AGENT_STOP_S):
                return await asyncio.shield(agent)
        except TimeoutError:
            log.warning("call %s: the agent did not stop in time", call_id)
        except Exception:
            log.exception("call %s: the agent failed", call_id)
        agent.cancel()
        return None

    def _result(
        self,
        call: Call,
        request: DialRequest,
        answered_at: datetime,
        error: str | None,
        outcome: AgentOutcome | None,
    ) -> DialResult:
        remote = call.end_reason in (EndReason.REMOTE_BYE, EndReason.SESSION_EXPIRED)
        ended_by = EndedBy.USER if remote else EndedBy.ASSISTANT
        answered_by = AnsweredBy.UNKNOWN if request.answered_by_enabled else None
        status = Outcome.COMPLETED
        result = DialResult(
            status, answered_by=answered_by, answered_at=answered_at,
            ended_at=datetime.now(UTC), ended_by=ended_by, error_message=error,
            sip_code=200, endpoint=self.describe(),
        )  # fmt: skip
        if self.media is not None and outcome is None:
            result.error_message = error or "the agent failed on this call"
        if outcome is None:
            return result
        if outcome.ended_by is not None and not remote:
            result.ended_by = outcome.ended_by
        if request.answered_by_enabled and outcome.answered_by is not None:
            result.answered_by = outcome.answered_by
            if outcome.answered_by is AnsweredBy.VOICEMAIL:
                result.outcome = Outcome.VOICEMAIL
        result.transcript = list(outcome.transcript)
        if outcome.recording_path is not None:
            result.recording_path = str(outcome.recording_path)
        result.model = outcome.model
        if outcome.error and not result.error_message:
            result.error_message = outcome.error
        return result

    def _failed(self, message: str) -> DialResult:
        return DialResult(Outcome.FAILED, error_message=message, endpoint=self.describe())


async def _mirror(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
