"""One outgoing INVITE, from the first request until it is answered or has failed.

`OutgoingInvite.run` drives the INVITE client transaction and reacts to what comes
back: 1xx (ringing, early media from a 183's SDP), 401/407 (one authenticated
retry per challenge), 422 (retry with the peer's Min-SE), a ring timeout or the
hangup event (CANCEL once a provisional has arrived, then the 487), and 2xx. Every
2xx is ACKed (again on each retransmission); a second dialog from a forking proxy
is ACKed and then released with BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from callfleet.telephony.sip.auth import Credentials, build_authorization, preferred_challenge
from callfleet.telephony.sip.call import Call, CallHost
from callfleet.telephony.sip.dialog import Dialog
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.telephony.sip.errors import SdpError, SipError, TransactionTimeout
from callfleet.telephony.sip.media import LocalSdp, MediaHandler
from callfleet.telephony.sip.message import Headers, SipRequest, SipResponse
from callfleet.telephony.sip.sdp import NegotiatedMedia, negotiate, negotiate_or_warn, parse_sdp
from callfleet.telephony.sip.session_timer import parse_min_se
from callfleet.telephony.sip.transport import Address

__all__ = ["InviteHost", "InviteResult", "OutgoingInvite"]

log = structlog.get_logger(__name__)

MAX_QUEUED_PROVISIONALS = 32
"""1xx responses waiting to be read; past it new ones are dropped (and counted), so a
peer flooding 180s cannot grow the INVITE's queue. Final responses always go in."""


@dataclass
class InviteResult:
    """How an INVITE ended: `call` is set when it was answered."""

    status: int
    reason: str
    call: Call | None = None
    retry_after_s: float | None = None
    cancelled_by: str | None = None
    """`ring-timeout` or `hangup` when we sent CANCEL (or BYE on a 2xx race)."""
    timed_out: bool = False
    """No response at all (Timer B)."""
    early_media: bool = False
    setup_time_s: float | None = None


class InviteHost(CallHost, Protocol):
    """A `CallHost` that also routes a 2xx retransmission to its INVITE (`SipClient`)."""

    def register_call(self, call: Call, outgoing: OutgoingInvite) -> None:
        """Route requests in `call`'s dialog to it, and its 2xx resends to `outgoing`."""
        ...


class OutgoingInvite:
    def __init__(
        self,
        client: InviteHost,
        *,
        target: str,
        from_addr: str,
        dest: Address,
        media: MediaHandler,
        credentials: Credentials | None,
        extra_headers: list[tuple[str, str]],
        in_dialog_dest: Address | None,
    ) -> None:
        self.client = client
        self.target = target
        self.dest = dest
        self.in_dialog_dest = in_dialog_dest
        self.media = media
        self.credentials = credentials
        self.call_id = f"{secrets.token_hex(12)}@{client.host}"
        self.from_value = f"{from_addr};tag={secrets.token_hex(6)}"
        self.sdp = LocalSdp(client.host, media.local_port)
        self.offer = self.sdp.offer()
        self.extra_headers = extra_headers
        self.session_expires = client.config.session_expires_s
        self.min_se: int | None = None
        self.call: Call | None = None
        self._cseq = 0
        self._auth: dict[tuple[str, str], str] = {}
        self._challenged: set[tuple[str, str]] = set()
        self._events: asyncio.Queue[SipResponse | TransactionTimeout] = asyncio.Queue()
        self._invite: SipRequest | None = None
        self._acks: dict[str, tuple[SipRequest, Address]] = {}
        self._early: NegotiatedMedia | None = None

    # -- sending -------------------------------------------------------------------

    def _build_invite(self) -> SipRequest:
        self._cseq += 1
        h = Headers()
        h.add("Via", self.client.via())
        h.add("Max-Forwards", "70")
        h.add("From", self.from_value)
        h.add("To", f"<{self.target}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self._cseq} INVITE")
        h.add("Contact", self.client.contact())
        h.add("Allow", self.client.ALLOW)
        h.add("Supported", "timer, replaces")
        h.add("User-Agent", self.client.config.user_agent)
        if self.session_expires is not None:
            h.add("Session-Expires", str(self.session_expires))
            if self.min_se is not None:
                h.add("Min-SE", str(self.min_se))
        for (name, _realm), value in self._auth.items():
            h.add(name, value)
        for name, value in self.extra_headers:
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        return SipRequest(headers=h, body=self.offer, method="INVITE", uri=self.target)

    def _send_invite(self) -> None:
        self._invite = self._build_invite()
        self.client.endpoint.start_invite(
            self._invite,
            self.dest,
            self._on_response,
            lambda: self._events.put_nowait(TransactionTimeout("INVITE timed out")),
        )

    def _on_response(self, response: SipResponse) -> None:
        if 200 <= response.status < 300:
            self.handle_2xx(response)
        elif response.status < 200 and self._events.qsize() >= MAX_QUEUED_PROVISIONALS:
            SIP_DROPS.add("provisional_overflow")
        else:
            self._events.put_nowait(response)

    def handle_2xx(self, response: SipResponse) -> None:
        """ACK every 2xx; the first makes the call, later dialogs are released."""
        tag = response.to_addr.tag or ""
        known = self._acks.get(tag)
        if known is not None:
            self.client.endpoint.send(*known)
            return
        invite = self._invite
        if invite is None or response.cseq[0] != invite.cseq[0]:
            return
        dialog = Dialog.from_response(invite, response)
        ack = dialog.create_request("ACK", self.client.via(), cseq=invite.cseq[0])
        dest = self.client.dialog_destination(dialog, self.in_dialog_dest)
        self._acks[tag] = (ack, dest)
        try:
            self.client.endpoint.send(ack, dest)
        except SipError as exc:
            log.warning("sip_ack_not_sent", call_id=self.call_id, error=str(exc))
        if self.call is None:
            self.call = Call(self.client, dialog, self.sdp, self.media, dest, self.credentials)
            self.call.start_session_timer(response)
            self._events.put_nowait(response)
        else:
            log.info("sip_forked_2xx_released", call_id=self.call_id, to_tag=tag)
            extra = Call(self.client, dialog, self.sdp, None, dest, self.credentials)
            self.client.spawn(extra.hangup())

    def _cancel(self) -> None:
        invite = self._invite
        if invite is None:
            return
        h = Headers()
        h.add("Via", invite.headers.values("Via")[0])
        for route in invite.headers.get_all("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.add(name, invite.headers.get(name) or "")
        h.add("CSeq", f"{invite.cseq[0]} CANCEL")
        cancel = SipRequest(headers=h, method="CANCEL", uri=invite.uri)
        tx = self.client.endpoint.start_request(cancel, self.dest)
        self.client.spawn(_absorb(tx.result()))

    # -- the flow ------------------------------------------------------------------

    async def run(
        self,
        *,
        ring_timeout_s: float,
        hangup: asyncio.Event | None,
        on_ringing: Callable[[], Awaitable[None]] | None,
    ) -> InviteResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + ring_timeout_s
        stop = hangup or asyncio.Event()
        provisional = False
        rang = False
        cancel_wanted: str | None = None
        cancel_sent = False
        self._send_invite()
        while True:
            if cancel_wanted is None:
                limit: float | None = max(0.0, deadline - loop.time())
            else:
                limit = started + ring_timeout_s + self.client.config.timers.give_up - loop.time()
            event = await _next_event(self._events, stop, cancel_wanted is None, limit)
            if event == "timeout" and cancel_wanted is not None:
                return InviteResult(
                    408, "No final response after CANCEL", cancelled_by=cancel_wanted
                )
            if event in ("timeout", "hangup"):
                cancel_wanted = "ring-timeout" if event == "timeout" else "hangup"
                if provisional:
                    self._cancel()
                    cancel_sent = True
                continue
            if isinstance(event, TransactionTimeout):
                return InviteResult(
                    408, "Request Timeout (no response)", timed_out=True, cancelled_by=cancel_wanted
                )
            assert isinstance(event, SipResponse)
            response = event
            status = response.status
            if status < 200:
                provisional = True
                if cancel_wanted is not None and not cancel_sent:
                    self._cancel()
                    cancel_sent = True
                if status in (180, 183) and not rang:
                    rang = True
                    if on_ringing is not None:
                        await on_ringing()
                self._maybe_early_media(response)
                continue
            if status < 300:
                return await self._answered(response, cancel_wanted, loop.time() - started)
            if status in (401, 407) and self._authenticate(response):
                self._send_invite()
                continue
            if status == 422 and self._session_interval_too_small(response):
                self._send_invite()
                continue
            return InviteResult(
                status,
                response.reason,
                retry_after_s=_retry_after(response),
                cancelled_by=cancel_wanted,
                early_media=self._early is not None,
            )

    def _maybe_early_media(self, response: SipResponse) -> None:
        media = negotiate_or_warn(response, "sip_unusable_early_media_sdp_ignored")
        if media is not None and media != self._early:
            self._early = media
            self.media.apply(media)

    async def _answered(
        self, response: SipResponse, cancelled_by: str | None, setup: float
    ) -> InviteResult:
        call = self.call
        assert call is not None
        self.client.register_call(call, self)
        if cancelled_by is not None:
            await call.hangup()
            return InviteResult(487, "Answered after CANCEL", cancelled_by=cancelled_by)
        media = self._early
        if response.body and response.content_type == "application/sdp":
            try:
                media = negotiate(parse_sdp(response.body))
            except SdpError as exc:
                await call.hangup(reason='SIP;cause=488;text="Not Acceptable Here"')
                return InviteResult(488, f"Not Acceptable Here ({exc})")
        if media is None:
            await call.hangup()
            return InviteResult(488, "Not Acceptable Here (answer without SDP)")
        if media != self._early:
            self.media.apply(media)
        call.media_state = media
        return InviteResult(
            response.status,
            response.reason,
            call=call,
            early_media=self._early is not None,
            setup_time_s=setup,
        )

    def _authenticate(self, response: SipResponse) -> bool:
        if self.credentials is None or self._invite is None:
            return False
        picked = preferred_challenge(response)
        if picked is None:
            return False
        name, challenge = picked
        key = (name, challenge.realm)
        if key in self._challenged and not challenge.stale:
            return False
        self._challenged.add(key)
        self._auth[key] = build_authorization(
            challenge, self.credentials, method="INVITE", uri=self.target, body=self.offer
        )
        return True

    def _session_interval_too_small(self, response: SipResponse) -> bool:
        min_se = parse_min_se(response)
        if self.min_se is not None or min_se is None:
            return False
        self.min_se = min_se
        self.session_expires = max(self.session_expires or 0, self.min_se)
        return True


def _retry_after(response: SipResponse) -> float | None:
    value = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0].strip()
    return float(value) if value.isdigit() else None


async def _absorb(result: Awaitable[SipResponse]) -> None:
    with contextlib.suppress(SipError):
        await result


async def _next_event(
    queue: asyncio.Queue[SipResponse | TransactionTimeout],
    stop: asyncio.Event,
    watch_stop: bool,
    limit_s: float | None,
) -> SipResponse | TransactionTimeout | str:
    """The next response, or `hangup` (stop set), or `timeout`."""
    if not queue.empty():
        return queue.get_nowait()
    if watch_stop and stop.is_set():
        return "hangup"
    getter = asyncio.ensure_future(queue.get())
    waits: set[asyncio.Future[object]] = {getter}  # type: ignore[arg-type]
    stopper = asyncio.ensure_future(stop.wait()) if watch_stop else None
    if stopper is not None:
        waits.add(stopper)  # type: ignore[arg-type]
    try:
        done, _ = await asyncio.wait(waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in waits:
            fut.cancel()
    if getter in done:
        return getter.result()
    if stopper is not None and stopper in done:
        return "hangup"
    return "timeout"
