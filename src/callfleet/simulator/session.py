"""One simulated call's SIP dialog: responses to the INVITE and the caller's requests.

`CallSession` answers the initial INVITE as the persona's script decides
(`callfleet.simulator.script`), retransmits its 2xx until the ACK, answers the
caller's in-dialog requests (BYE, re-INVITE/UPDATE offers, INFO digits, OPTIONS,
REFER with its NOTIFY) and sends our BYE. Its media live in `CallMedia`; the
simulator it belongs to is reached through `SessionHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

import structlog

from callfleet.clock import utcnow
from callfleet.simulator.config import SimulatorConfig
from callfleet.simulator.media import CallMedia
from callfleet.simulator.records import (
    ENDED_BY_CALLER,
    ENDED_BY_SIMULATOR,
    SimulatedCall,
    write_recording,
)
from callfleet.simulator.rules import Persona
from callfleet.simulator.transactions import ServerTransaction
from callfleet.telephony.rtp.session import RtpSession
from callfleet.telephony.sip.dialog import Dialog
from callfleet.telephony.sip.endpoint import new_tag
from callfleet.telephony.sip.errors import SdpError, SipError, SipParseError
from callfleet.telephony.sip.message import SipMessage, SipRequest, SipResponse
from callfleet.telephony.sip.sdp import SessionDescription, negotiate_or_warn, parse_sdp
from callfleet.telephony.sip.transport import Address
from callfleet.telephony.sip.uri import parse_name_addr

__all__ = ["ALLOW", "SERVER", "CallSession", "SessionHost"]

log = structlog.get_logger(__name__)

SERVER = "callfleet-simulator"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER"

Transaction = ServerTransaction["CallSession"]


class SessionHost(Protocol):
    """What a call needs from the simulator that carries it (`PhoneSimulator`)."""

    @property
    def config(self) -> SimulatorConfig: ...

    @property
    def media_host(self) -> str: ...

    @property
    def reliable(self) -> bool: ...

    def via(self) -> str: ...

    def contact(self, user: str) -> str: ...

    def capabilities(self) -> list[tuple[str, str]]: ...

    def reply(
        self,
        tx: Transaction,
        status: int,
        reason: str,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse: ...

    def send(self, message: SipMessage, dest: Address) -> None: ...

    async def send_request(self, request: SipRequest, dest: Address) -> SipResponse: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def session_ended(self, session: CallSession) -> None: ...


def _dialog_for(invite: SipRequest, local_tag: str) -> Dialog:
    """The UAS side of the dialog an initial INVITE creates (RFC 3261 §12.1.1)."""
    contacts = invite.headers.values("Contact")
    target = str(parse_name_addr(contacts[0]).uri) if contacts else str(invite.from_addr.uri)
    local = parse_name_addr(invite.headers.get("To") or "")
    remote = parse_name_addr(invite.headers.get("From") or "")
    local.params.pop("tag", None)
    remote.params.pop("tag", None)
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=invite.from_addr.tag or "",
        local_addr=str(local),
        remote_addr=str(remote),
        remote_target=target,
        route_set=invite.headers.values("Record-Route"),
        local_cseq=secrets.randbelow(1000),
        remote_cseq=invite.cseq[0],
    )


class CallSession:
    """One call: the initial INVITE's transaction, its dialog, and its media."""

    def __init__(
        self, host: SessionHost, tx: Transaction, record: SimulatedCall, persona: Persona
    ) -> None:
        self.host = host
        self.tx = tx
        self.record = record
        self.persona = persona
        self.local_tag = new_tag()
        self.dialog = _dialog_for(tx.request, self.local_tag)
        self.dest = tx.source
        self.state = "trying"  # trying -> early -> accepted -> ended
        self.offer: SessionDescription | None = None
        self.media: CallMedia | None = None
        self.task: asyncio.Task[None] | None = None
        self.acked = asyncio.Event()
        self._pending_2xx: dict[int, asyncio.TimerHandle] = {}
        self._awaiting_answer: set[int] = set()

    # -- responses to the initial INVITE -------------------------------------------

    def _respond(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        response = self.host.reply(
            self.tx, status, reason, to_tag=self.local_tag, headers=headers, body=body
        )
        self.record.responses.append(status)
        return response

    def provisional(self, status: int, reason: str) -> None:
        if self.tx.final:
            return
        self._respond(status, reason)
        if status > 100:
            self.state = "early"

    def final(self, status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """A non-2xx final response to the INVITE; the call is over."""
        if self.tx.final:
            return
        self.record.final_response = self._respond(status, reason, headers)
        by = ENDED_BY_CALLER if status == 487 else ENDED_BY_SIMULATOR
        self.end(by)

    async def answer(self, *, record_s: float = 0.0) -> bool:
        """Open RTP (silent until a source is set) and send 200 with our SDP; False if the
        call ended meanwhile. `record_s` caps how much of the caller's audio is kept.
        """
        cfg = self.host.config
        try:
            # The caller's own address may move the stream to the port it really sends
            # from (symmetric RTP, as a trunk behind NAT would); nobody else may.
            rtp = await RtpSession.open(
                self.host.media_host,
                port_range=cfg.rtp_port_range,
                inactivity_timeout_s=3600.0,
                latch_host=self.dest[0],
            )
        except OSError as exc:
            log.warning("simulator_no_rtp_port", call_id=self.record.call_id, error=str(exc))
            self.final(500, "Server Internal Error")
            return False
        if self.tx.final or self.state == "ended":
            await rtp.close()
            return False
        media = self.media = CallMedia(
            self.record, rtp, self.host.media_host, lambda: self.state == "accepted"
        )
        cseq = self.tx.request.cseq[0]
        if self.offer is not None:
            body, negotiated = media.answer(self.offer)
            if cfg.time_scale > 0:
                media.apply(negotiated)
            # Fast mode starts no RTP stream (nothing sent, the caller's ignored): at
            # a few hundred calls in the air, 50 packets a second each way in Python
            # made the test rig the bottleneck.
        else:
            body = media.offer()
            self._awaiting_answer.add(cseq)
        response = self._respond(200, "OK", self._answer_headers(), body)
        self.record.final_response = response
        self.record.answered_at = utcnow()
        self.state = "accepted"
        media.keep(record_s)
        self._retransmit_2xx(response, cseq)
        return True

    def _answer_headers(self) -> list[tuple[str, str]]:
        return [
            ("Contact", self.host.contact(self.record.number)),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ]

    def _retransmit_2xx(self, response: SipResponse, cseq: int) -> None:
        """Resend the 2xx (T1 doubling to T2) until its ACK; give up after 64*T1."""
        loop = asyncio.get_running_loop()
        timers = self.host.config.timers
        start = loop.time()
        interval = timers.t1

        def resend() -> None:
            nonlocal interval
            if cseq not in self._pending_2xx or self.state == "ended":
                return
            if loop.time() - start >= timers.give_up:
                del self._pending_2xx[cseq]
                self._ack_timeout(cseq)
                return
            self.host.send(response, self.dest)
            interval = min(2 * interval, timers.t2)
            self._pending_2xx[cseq] = loop.call_later(interval, resend)

        if self.host.reliable:
            interval = timers.give_up  # TCP: nothing to resend, only the give-up
        self._pending_2xx[cseq] = loop.call_later(interval, resend)

    def _ack_timeout(self, cseq: int) -> None:
        if cseq != self.tx.request.cseq[0]:
            return
        log.info("simulator_no_ack_hanging_up", call_id=self.record.call_id)
        self.acked.set()
        self.host.spawn(self.hangup())

    # -- the caller's requests -----------------------------------------------------

    def on_ack(self, request: SipRequest) -> None:
        cseq = request.cseq[0]
        handle = self._pending_2xx.pop(cseq, None)
        if handle is None:
            return  # a retransmitted ACK, or one for a 2xx we gave up on
        handle.cancel()
        self.record.requests.append("ACK")
        if cseq == self.tx.request.cseq[0]:
            self.acked.set()
        if cseq in self._awaiting_answer:
            self._awaiting_answer.discard(cseq)
            self._apply_answer(request)

    def _apply_answer(self, message: SipRequest) -> None:
        if self.media is None:
            return
        media = negotiate_or_warn(message, "simulator_unusable_sdp_answer_in_ack")
        if media is not None:
            self.media.apply(media)

    def cancelled(self, request: SipRequest) -> None:
        self.record.requests.append(request.method)
        self.final(487, "Request Terminated")

    def on_request(self, tx: Transaction) -> None:
        request = tx.request
        method = request.method
        if not self.dialog.accept_remote_cseq(request.cseq[0]):
            self.host.reply(tx, 500, "Server Internal Error", headers=[("Retry-After", "1")])
            return
        self.record.requests.append(method)
        if method == "BYE":
            self.host.reply(tx, 200, "OK")
            if not self.tx.final:  # BYE on the early dialog (RFC 3261 §15)
                self.final(487, "Request Terminated")
            self.end(ENDED_BY_CALLER)
        elif method in ("INVITE", "UPDATE"):
            self._offer_answer(tx)
        elif method == "INFO":
            self.host.reply(tx, 200, "OK")
            self._dtmf_info(request)
        elif method == "OPTIONS":
            self.host.reply(tx, 200, "OK", headers=self.host.capabilities())
        elif method == "REFER":
            self._refer(tx)
        else:
            self.host.reply(tx, 501, "Not Implemented", headers=[("Allow", ALLOW)])

    def _refer(self, tx: Transaction) -> None:
        """RFC 3515 blind transfer: 202, then its outcome (always a success) in a NOTIFY."""
        if self.state != "accepted":
            self.host.reply(tx, 403, "Forbidden (not answered)")
            return
        try:
            target = str(parse_name_addr(tx.request.headers.get("Refer-To") or "").uri)
        except SipParseError:
            self.host.reply(tx, 400, "Bad Request (Refer-To)")
            return
        contact = [("Contact", self.host.contact(self.record.number))]
        self.host.reply(tx, 202, "Accepted", headers=contact)
        self.record.transferred_to = target
        if self.media is not None and self.media.conversation is not None:
            self.media.conversation.hush()  # the person is being put through: they stop
        self.host.spawn(self._transferred())

    async def _transferred(self) -> None:
        notify = self.dialog.create_request(
            "NOTIFY",
            self.host.via(),
            contact=self.host.contact(self.record.number),
            body=b"SIP/2.0 200 OK\r\n",
            content_type="message/sipfrag",
            extra=[("Event", "refer"), ("Subscription-State", "terminated;reason=noresource")],
        )
        try:
            await self.host.send_request(notify, self.dest)
        except SipError as exc:
            log.info("simulator_notify_unanswered", call_id=self.record.call_id, error=str(exc))
        await self.wait_ended(self.host.config.transfer_hangup_s)
        await self.hangup()

    def _offer_answer(self, tx: Transaction) -> None:
        """A re-INVITE or UPDATE: answer its offer, or (re-INVITE) offer our current SDP."""
        request = tx.request
        invite = request.method == "INVITE"
        media = self.media
        if self.state != "accepted" or media is None:
            if invite:
                self.host.reply(tx, 491, "Request Pending")
            else:  # UPDATE without an offer while ringing, or before media: nothing to change
                self.host.reply(tx, 200, "OK")
            return
        self.dialog.refresh_target(request)
        headers = [("Contact", self.host.contact(self.record.number)), ("Allow", ALLOW)]
        body = b""
        if request.body and request.content_type == "application/sdp":
            try:
                body, negotiated = media.answer(parse_sdp(request.body))
            except SdpError as exc:
                warning = [("Warning", f'399 {SERVER} "{exc}"')]
                self.host.reply(tx, 488, "Not Acceptable Here", headers=warning)
                return
            media.apply(negotiated)
        elif invite:
            body = media.last_sdp
            self._awaiting_answer.add(request.cseq[0])
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = self.host.reply(tx, 200, "OK", headers=headers, body=body)
        if invite:
            self._retransmit_2xx(response, request.cseq[0])

    def _dtmf_info(self, request: SipRequest) -> None:
        if request.content_type != "application/dtmf-relay":
            return
        for line in request.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                self.record.dtmf.append(value.strip()[:1])

    # -- waiting and hanging up ----------------------------------------------------

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds` of the persona's time (scaled by `time_scale`)."""
        await asyncio.sleep(seconds * self.host.config.time_scale)

    async def wait_ended(self, seconds: float) -> None:
        """Until the call ends, or `seconds` (real time) have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.record.ended.wait()

    async def hangup(self) -> None:
        """Our BYE, once the 2xx was ACKed (or its retransmissions gave up)."""
        if self.state != "accepted":
            return
        if not self.acked.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.host.config.timers.give_up):
                    await self.acked.wait()
        if self.state != "accepted":
            return
        bye = self.dialog.create_request("BYE", self.host.via())
        self.end(ENDED_BY_SIMULATOR)
        try:
            await self.host.send_request(bye, self.dest)
        except SipError as exc:
            log.info("simulator_bye_unanswered", call_id=self.record.call_id, error=str(exc))

    # -- the end -------------------------------------------------------------------

    def end(self, by: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        record = self.record
        record.ended_at = utcnow()
        record.ended_by = by
        for handle in self._pending_2xx.values():
            handle.cancel()
        self._pending_2xx.clear()
        self.acked.set()
        if self.media is not None:
            if self.media.conversation is not None:
                record.barge_in_stop_ms = self.media.conversation.barge_in_stop_ms
            self.host.spawn(self.media.stop())
        write_recording(record, self.host.config.record_dir)
        self.host.session_ended(self)
        record.ended.set()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def abort(self) -> None:
        """Shutdown: release the caller (BYE, or 503 while unanswered), without waiting."""
        if self.state == "accepted":
            bye = self.dialog.create_request("BYE", self.host.via())
            self.host.send(bye, self.dest)
            self.end(ENDED_BY_SIMULATOR)
        elif self.state != "ended":
            self.final(503, "Service Unavailable")
