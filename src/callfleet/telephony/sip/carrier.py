"""`SipCarrier`: the carrier port (`callfleet.telephony.carrier`) over our SIP client.

It places each `DialRequest` as an INVITE to the request's trunk, reports ringing
and answer through `CallEvents`, and while answered keeps the RTP stream alive
(silence for now; the agent's audio comes later) until the remote hangs up,
`request.hangup` is set, `max_duration_s` passes or the media goes dead. Outcomes
of the call are returned, never raised; if the task is cancelled (shutdown) the
call is still released (CANCEL or BYE) before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

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

__all__ = ["SipCarrier", "SipCarrierConfig"]

log = logging.getLogger(__name__)
_RELEASE_TIMEOUT_S = 5.0


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


class SipCarrier:
    def __init__(self, config: SipCarrierConfig | None = None) -> None:
        self.config = config or SipCarrierConfig()
        self._clients: dict[str, SipClient] = {}
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"sip:{self.config.advertised_host or self.config.bind_host}"

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

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
            return await self._converse(result.call, rtp, request, events)
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
        self, call: Call, rtp: RtpSession, request: DialRequest, events: CallEvents
    ) -> DialResult:
        answered_at = datetime.now(UTC)
        error: str | None = None
        try:
            await events.answered()
            waits = {
                "remote": asyncio.ensure_future(call.ended.wait()),
                "hangup": asyncio.ensure_future(request.hangup.wait()),
                "dead": asyncio.ensure_future(rtp.inactive.wait()),
            }
            try:
                done, _ = await asyncio.wait(
                    waits.values(), timeout=request.max_duration_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
            finally:
                for fut in waits.values():
                    fut.cancel()
            if waits["dead"] in done and not call.ended.is_set():
                error = "media timeout: no RTP from the remote"
        finally:
            await asyncio.shield(call.hangup())
            await call.aclose()
        remote = call.end_reason in (EndReason.REMOTE_BYE, EndReason.SESSION_EXPIRED)
        return DialResult(
            Outcome.COMPLETED,
            answered_by=AnsweredBy.UNKNOWN if request.answered_by_enabled else None,
            answered_at=answered_at, ended_at=datetime.now(UTC),
            ended_by=EndedBy.USER if remote else EndedBy.ASSISTANT,
            error_message=error, sip_code=200, endpoint=self.describe(),
        )  # fmt: skip

    def _failed(self, message: str) -> DialResult:
        return DialResult(Outcome.FAILED, error_message=message, endpoint=self.describe())


async def _mirror(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
