"""`SipCarrier`: the carrier port (`callfleet.telephony.carrier`) over our SIP client.

It places each `DialRequest` as an INVITE to the request's trunk, reports ringing
and answer through `CallEvents`, and once answered puts its `talker` on the line
(`callfleet.telephony.line`: the AI agent, in production) on the RTP stream, or
sends silence when there is none (load tests). The call lasts until the agent hangs up, the remote
hangs up, `request.hangup` is set, `max_duration_s` passes or the media goes dead.
The talker's outcome (transcript, recording, `answered_by`, latency) becomes the
`DialResult`. Outcomes of the call are returned, never raised; if the task is
cancelled (shutdown) the call is still released (CANCEL or BYE) before the
cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from callfleet.net.trunks import TrunkPolicy, TrunkRefused, TrunkUnresolvable, resolve_trunk
from callfleet.telephony.carrier import (
    AnsweredBy,
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
    TrunkTarget,
)
from callfleet.telephony.line import AnsweredCall, LineOutcome, LineSession, Talker
from callfleet.telephony.line_recorder import LineRecorder
from callfleet.telephony.rtp.session import RtpSession
from callfleet.telephony.sip.auth import Credentials
from callfleet.telephony.sip.call import Call, EndReason
from callfleet.telephony.sip.client import SipClient, SipClientConfig
from callfleet.telephony.sip.config import SipLimits
from callfleet.telephony.sip.errors import SipError, TransportError
from callfleet.telephony.sip.invite import InviteResult
from callfleet.telephony.sip.message import UnsafeHeaderValue
from callfleet.telephony.sip.outcome import failed_invite_result
from callfleet.telephony.sip.transaction import SipTimers

__all__ = ["CALL_HEADER", "REFUSED_AT_DIAL", "UNREACHABLE", "SipCarrier", "SipCarrierConfig"]

log = structlog.get_logger(__name__)
_RELEASE_TIMEOUT_S = 5.0
_AGENT_STOP_S = 15.0
"""How long an agent gets to wrap up (close its recording) after the call ended."""
REFUSED_AT_DIAL = (
    "the trunk's host is not an allowed call destination; see the operator's address policy"
)
"""The one message for every refusal of the trunk address policy: it names no address."""
UNREACHABLE = "no response from the SIP trunk (no answer, or no connection)"
"""The one message for a trunk that cannot be reached, refused port or silence alike."""
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
    sip_limits: SipLimits = field(default_factory=SipLimits)
    """What the SIP listener takes from the network (and from whom)."""


class SipCarrier:
    def __init__(
        self,
        config: SipCarrierConfig | None = None,
        *,
        talker: Talker | None = None,
        trunk_policy: TrunkPolicy | None = None,
    ) -> None:
        self.config = config or SipCarrierConfig()
        self.talker = talker
        """What talks on answered calls (the agent); None sends silence."""
        self.trunk_policy = trunk_policy
        """Where tenants' trunks may send calls, checked at every dial (`place_call`);
        None checks nothing (tests that dial their own peers)."""
        self._clients: dict[str, SipClient] = {}
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"sip:{self.config.advertised_host or self.config.bind_host}"

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self.talker is not None:
            await self.talker.close()

    async def _client(self, transport: str) -> SipClient:
        kind = transport.lower()
        async with self._lock:
            client = self._clients.get(kind)
            if client is None:
                cfg = self.config
                client = SipClient(
                    SipClientConfig(
                        bind_host=cfg.bind_host,
                        transport=kind,
                        advertised_host=cfg.advertised_host,
                        user_agent=cfg.user_agent,
                        timers=cfg.timers,
                        session_expires_s=cfg.session_expires_s,
                        limits=cfg.sip_limits,
                    )
                )
                await client.start()
                self._clients[kind] = client
            return client

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        """Place a call through a tenant's trunk: its host passes `trunk_policy` first."""
        return await self._place(request, events, self.trunk_policy)

    async def place_own_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        """Place a call to a SIP server of our own (the built-in phone simulator), which
        no tenant chose: no address policy applies."""
        return await self._place(request, events, None)

    async def _place(
        self, request: DialRequest, events: CallEvents, policy: TrunkPolicy | None
    ) -> DialResult:
        trunk = request.trunk
        if trunk is None:
            return self._failed("no SIP trunk configured for this call")
        try:
            proxy = await self._destination(request, trunk, policy)
        except TrunkRefused:
            return self._failed(REFUSED_AT_DIAL)
        except TrunkUnresolvable:
            return self._failed(f"the trunk's host {trunk.host!r} does not resolve")
        try:
            client = await self._client(trunk.transport)
            rtp = await RtpSession.open(
                self.config.bind_host,
                port_range=self.config.rtp_port_range,
                inactivity_timeout_s=self.config.inactivity_timeout_s,
                latch_host=proxy[0],  # only the trunk may move the media (NAT)
                # and the media may go only where the trunk itself may
                media_policy=policy.media_refusal if policy is not None else None,
            )
        except (SipError, OSError) as exc:
            return self._failed(f"cannot start the call: {exc}")
        if self.talker is not None:
            self.talker.prepare(request)  # its known lines get ready while it rings
        try:
            result = await self._invite(client, rtp, request, events, trunk, proxy)
            if result.timed_out:
                return self._unreachable(request, "no final response (Timer B)")
            if result.call is None:
                return failed_invite_result(result, endpoint=self.describe())
            return await self._converse(result.call, rtp, request, events, trunk)
        except UnsafeHeaderValue as exc:
            return self._failed(str(exc))
        except (TransportError, OSError) as exc:
            return self._unreachable(request, str(exc))
        except SipError as exc:
            return self._failed(f"SIP error: {exc}")
        finally:
            await rtp.close()

    async def _destination(
        self, request: DialRequest, trunk: TrunkTarget, policy: TrunkPolicy | None
    ) -> tuple[str, int]:
        """Where the INVITE goes: with a policy, an address it just checked (so a DNS
        answer cannot change between the check and the connection)."""
        try:
            addresses = await resolve_trunk(trunk.host, trunk.port, policy)
        except TrunkRefused as exc:
            log.warning(
                "dial refused by the trunk address policy",
                call_id=request.call_id,
                host=trunk.host,
                address=exc.address,
                reason=exc.reason,
            )
            raise
        return addresses[0], trunk.port

    def _unreachable(self, request: DialRequest, detail: str) -> DialResult:
        """One answer for a trunk that cannot be reached, whatever the socket said
        (refused, reset, unreachable or silent), so calls cannot scan ports; the
        operator's log keeps the detail."""
        log.info("the SIP trunk was not reached", call_id=request.call_id, detail=detail)
        return DialResult(
            Outcome.FAILED, sip_code=408, error_message=UNREACHABLE, endpoint=self.describe()
        )

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
        invite = asyncio.create_task(
            client.invite(
                f"sip:{number}@{trunk.host}:{trunk.port}{suffix}",
                media=rtp,
                from_uri=f"sip:{caller}@{trunk.from_domain or trunk.host}",
                credentials=credentials,
                ring_timeout_s=request.ring_timeout_s,
                hangup=stop,
                on_ringing=events.ringing,
                proxy=proxy,
                headers=[(CALL_HEADER, f"{request.call_id};attempt={request.attempt}")],
            )
        )
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
        agent: asyncio.Task[LineOutcome] | None = None
        outcome: LineOutcome | None = None
        ended = asyncio.Event()
        recorder = None
        try:
            if self.talker is not None:
                agent = self._start_agent(self.talker, call, rtp, request, trunk, ended)
            elif request.record and (path := self._recording_path(request)) is not None:
                recorder = LineRecorder(path)
                rtp.on_audio = recorder.write
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
                    waits.values(),
                    timeout=request.max_duration_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for name, fut in waits.items():
                    if name != "agent":
                        fut.cancel()
            if rtp.refused is not None:
                error = rtp.refused
            elif waits["dead"] in done and not call.ended.is_set():
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
            if recorder is not None:
                outcome = LineOutcome(recording_path=recorder.close())
        return self._result(call, request, answered_at, error, outcome)

    def _start_agent(
        self,
        talker: Talker,
        call: Call,
        rtp: RtpSession,
        request: DialRequest,
        trunk: TrunkTarget,
        ended: asyncio.Event,
    ) -> asyncio.Task[LineOutcome]:
        """Put the talker on the line: the RTP stream's hooks feed its session."""
        recording = self._recording_path(request) if request.record else None

        async def transfer(number: str) -> bool:
            plain = "".join(number.split())
            return await call.refer(f"sip:{plain}@{trunk.host}:{trunk.port}")

        session: LineSession = talker.answer(AnsweredCall(request, recording, transfer))
        rtp.on_audio = session.feed
        rtp.on_dtmf = session.dtmf
        call.on_dtmf = session.dtmf  # SIP INFO (application/dtmf-relay) digits too
        rtp.source = session
        return asyncio.create_task(session.run(ended), name=f"agent-{request.call_id}")

    def _recording_path(self, request: DialRequest) -> Path | None:
        if self.config.recordings_dir is None:
            return None
        name = re.sub(r"[^A-Za-z0-9_-]", "_", request.call_id)
        return self.config.recordings_dir / f"{name}-{request.attempt}.wav"

    async def _agent_outcome(
        self, agent: asyncio.Task[LineOutcome], call_id: str
    ) -> LineOutcome | None:
        try:
            async with asyncio.timeout(_AGENT_STOP_S):
                return await asyncio.shield(agent)
        except TimeoutError:
            log.warning("the agent did not stop in time", call_id=call_id)
        except Exception:
            log.exception("the agent failed", call_id=call_id)
        agent.cancel()
        return None

    def _result(
        self,
        call: Call,
        request: DialRequest,
        answered_at: datetime,
        error: str | None,
        outcome: LineOutcome | None,
    ) -> DialResult:
        remote = call.end_reason in (EndReason.REMOTE_BYE, EndReason.SESSION_EXPIRED)
        ended_by = EndedBy.USER if remote else EndedBy.ASSISTANT
        answered_by = AnsweredBy.UNKNOWN if request.answered_by_enabled else None
        status = Outcome.COMPLETED
        result = DialResult(
            status,
            answered_by=answered_by,
            answered_at=answered_at,
            ended_at=datetime.now(UTC),
            ended_by=ended_by,
            error_message=error,
            sip_code=200,
            endpoint=self.describe(),
        )
        if self.talker is not None and outcome is None:
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
        result.latency_ms = list(outcome.latency_ms)
        result.opted_out = outcome.opted_out
        if outcome.error and not result.error_message:
            result.error_message = outcome.error
        return result

    def _failed(self, message: str) -> DialResult:
        return DialResult(Outcome.FAILED, error_message=message, endpoint=self.describe())


async def _mirror(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
