"""An answered call: the confirmed dialog and everything that happens inside it.

`Call` answers the peer's in-dialog requests (BYE; re-INVITE and UPDATE offers,
including hold with `sendonly`/`inactive`; OPTIONS; INFO; NOTIFY for a transfer),
runs the session timer, and sends our own BYE, REFER and refresh re-INVITEs.
`ended` is set once the dialog is over, and `end_reason` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

import structlog

from callfleet.clock import utcnow
from callfleet.telephony.sip.auth import Credentials, build_authorization, preferred_challenge
from callfleet.telephony.sip.dialog import Dialog
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.telephony.sip.errors import SdpError, SipError
from callfleet.telephony.sip.host import DialogHost
from callfleet.telephony.sip.media import LocalSdp, MediaHandler
from callfleet.telephony.sip.message import SipRequest, SipResponse
from callfleet.telephony.sip.sdp import NegotiatedMedia, negotiate_or_warn, parse_sdp
from callfleet.telephony.sip.session_timer import (
    SessionTimer,
    parse_min_se,
    parse_session_expires,
)
from callfleet.telephony.sip.transport import Address

__all__ = ["Call", "CallHost", "EndReason", "sipfrag_status"]

log = structlog.get_logger(__name__)

MAX_QUEUED_NOTIFIES = 16
"""NOTIFYs kept for a transfer's progress; past it the oldest go (the latest matters),
so a peer sending NOTIFYs nobody reads cannot grow a call's memory."""


class EndReason(StrEnum):
    """Why a call's dialog ended."""

    REMOTE_BYE = "remote-bye"
    LOCAL_BYE = "local-bye"
    SESSION_EXPIRED = "session-expired"
    REFRESH_FAILED = "refresh-failed"


class CallHost(DialogHost, Protocol):
    """A `DialogHost` that routes requests to its calls (`SipClient`)."""

    def unregister_call(self, call: Call) -> None:
        """Stop routing requests to `call` (it has ended)."""
        ...


class Call:
    def __init__(
        self,
        client: CallHost,
        dialog: Dialog,
        sdp: LocalSdp,
        media: MediaHandler | None,
        dest: Address,
        credentials: Credentials | None,
    ) -> None:
        self.client = client
        self.dialog = dialog
        self.sdp = sdp
        self.media = media
        self.dest = dest
        self.credentials = credentials
        self.media_state: NegotiatedMedia | None = None
        self.answered_at = utcnow()
        self.ended = asyncio.Event()
        self.end_reason: EndReason | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        """Called with each digit the peer sends by SIP INFO (application/dtmf-relay)."""
        self.refreshes = 0
        self._timer = SessionTimer(self._refresh, self._expire)
        self._reinvite_pending = False
        self._notifies: asyncio.Queue[SipRequest] = asyncio.Queue(MAX_QUEUED_NOTIFIES)

    def __repr__(self) -> str:
        return f"<Call {self.dialog.call_id} ended={self.end_reason}>"

    # -- lifecycle -----------------------------------------------------------------

    def start_session_timer(self, response: SipResponse) -> None:
        """Honour the 2xx's Session-Expires (we always send `Supported: timer`)."""
        session = parse_session_expires(response)
        if session is None:
            return
        interval, refresher = session
        self._timer.start(interval, we_refresh=refresher != "uas")

    def _end(self, reason: EndReason) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self._timer.stop()
        self.client.unregister_call(self)

    async def hangup(self, reason: str | None = None) -> None:
        """Send BYE (once) and wait for its response or Timer F."""
        if self.ended.is_set():
            return
        self._end(EndReason.LOCAL_BYE)
        extra = [("Reason", reason)] if reason else []
        with contextlib.suppress(SipError):
            await self._send("BYE", extra=extra)

    async def wait_ended(self) -> str:
        await self.ended.wait()
        return self.end_reason or ""

    async def aclose(self) -> None:
        await self._timer.aclose()

    # -- requests we send ----------------------------------------------------------

    async def _send(
        self,
        method: str,
        *,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipResponse:
        """A non-INVITE request in the dialog, retried once with credentials if challenged."""
        auth: list[tuple[str, str]] = []
        for _ in range(2):
            request = self.dialog.create_request(
                method,
                self.client.via(),
                contact=self.client.contact(),
                body=body,
                content_type=content_type,
                extra=[*(extra or []), *auth],
            )
            response = await self.client.endpoint.request(request, self.dest)
            auth = self._credentials_for(response, request)
            if not auth:
                return response
        return response

    def _credentials_for(self, response: SipResponse, request: SipRequest) -> list[tuple[str, str]]:
        picked = preferred_challenge(response)
        if picked is None or self.credentials is None:
            return []
        name, challenge = picked
        header = build_authorization(
            challenge, self.credentials, method=request.method, uri=request.uri, body=request.body
        )
        return [(name, header)]

    async def refer(self, target: str, *, timeout_s: float = 8.0) -> bool:
        """Blind transfer (RFC 3515): ask the peer to call `target` (a SIP URI) instead.

        Sends an in-dialog REFER with `Refer-To: <target>` and `Referred-By`; once the
        peer accepts it (202 or 200) its NOTIFYs report the new call's progress as
        `message/sipfrag` bodies. True when one reports a final 2xx. False when the
        REFER is refused (4xx-6xx) or goes unanswered, a NOTIFY reports a final
        non-2xx, the subscription ends without success, the call ends meanwhile, or
        nothing final arrives within `timeout_s` (which bounds the whole exchange).
        The caller hangs up (BYE) after a successful transfer.
        """
        if self.ended.is_set():
            return False
        while not self._notifies.empty():  # progress of an earlier transfer is not ours
            self._notifies.get_nowait()
        refer_to = target if target.startswith("<") else f"<{target}>"
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._send(
                    "REFER", extra=[("Refer-To", refer_to), ("Referred-By", self.dialog.local_addr)]
                )
                if not 200 <= response.status < 300:
                    log.info("sip_refer_refused", target=target, status=response.status)
                    return False
                return await self._transfer_progress()
        except TimeoutError:
            log.info("sip_refer_no_final_notify", target=target, timeout_s=timeout_s)
            return False
        except SipError as exc:
            log.info("sip_refer_failed", target=target, error=str(exc))
            return False

    async def _transfer_progress(self) -> bool:
        """Read the REFER subscription's NOTIFYs until one is final."""
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            while True:
                notified = asyncio.ensure_future(self._notifies.get())
                await asyncio.wait({notified, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not notified.done():
                    notified.cancel()
                    return False  # the dialog ended before the peer said how it went
                notify = notified.result()
                status = sipfrag_status(notify.body)
                if status is not None and status >= 200:
                    return status < 300
                state = (notify.headers.get("Subscription-State") or "").split(";")[0]
                if state.strip().lower() == "terminated":
                    return False
        finally:
            ended.cancel()

    async def _reinvite(self) -> SipResponse | None:
        """Send a refresh re-INVITE with our current offer; None if it timed out."""
        queue: asyncio.Queue[SipResponse | None] = asyncio.Queue()
        extra = [("Supported", "timer")]
        if self._timer.interval is not None:
            extra.append(("Session-Expires", f"{self._timer.interval};refresher=uac"))
        request = self.dialog.create_request(
            "INVITE",
            self.client.via(),
            contact=self.client.contact(),
            body=self.sdp.offer(),
            content_type="application/sdp",
            extra=extra,
        )
        ack: SipRequest | None = None

        def on_response(response: SipResponse) -> None:
            nonlocal ack
            if 200 <= response.status < 300:
                if ack is None:
                    ack = self.dialog.create_request("ACK", self.client.via(), cseq=request.cseq[0])
                    queue.put_nowait(response)
                self.client.endpoint.send(ack, self.dest)
            elif response.status >= 200:
                queue.put_nowait(response)

        self._reinvite_pending = True
        try:
            transport = self.client.endpoint.transport
            if transport is not None:
                await transport.connect(self.dest)
            self.client.endpoint.start_invite(
                request, self.dest, on_response, lambda: queue.put_nowait(None)
            )
            return await queue.get()
        finally:
            self._reinvite_pending = False

    async def _refresh(self) -> bool:
        response: SipResponse | None = None
        for _ in range(3):
            response = await self._reinvite()
            if response is None:
                return False
            if response.status == 491:
                await asyncio.sleep(random.uniform(2.1, 4.0))
                continue
            if response.status == 422:
                min_se = parse_min_se(response)
                if min_se is not None:
                    self._timer.interval = max(min_se, self._timer.interval or 0)
                    continue
            break
        if response is None:
            return False
        if response.status >= 300:
            if response.status in (408, 481):
                return False
            self._timer.start(self._timer.interval or 1800, we_refresh=True)
            return True
        self.refreshes += 1
        self._apply_answer(response)
        session = parse_session_expires(response)
        if session is not None:
            self._timer.start(session[0], we_refresh=session[1] != "uas")
        elif self._timer.interval is not None:
            self._timer.start(self._timer.interval, we_refresh=True)
        return True

    async def _expire(self) -> None:
        reason = (
            EndReason.SESSION_EXPIRED if not self._timer.we_refresh else EndReason.REFRESH_FAILED
        )
        if not self.ended.is_set():
            self._end(reason)
            with contextlib.suppress(SipError):
                await self._send("BYE", extra=[("Reason", 'SIP;cause=408;text="Session expired"')])

    def _apply_answer(self, message: SipResponse | SipRequest) -> None:
        media = negotiate_or_warn(message, "sip_unusable_sdp_answer_ignored")
        if media is not None:
            self._set_media(media)

    def _set_media(self, media: NegotiatedMedia) -> None:
        if media != self.media_state:
            self.media_state = media
            if self.media is not None:
                self.media.apply(media)

    # -- requests from the peer ----------------------------------------------------

    def handle_request(self, request: SipRequest, source: Address) -> None:
        ep = self.client.endpoint
        method = request.method
        if method == "ACK":
            self._apply_answer(request)
            return
        if method == "CANCEL":
            ep.respond(request, source, 481, "Call/Transaction Does Not Exist")
            return
        if not self.dialog.accept_remote_cseq(request.cseq[0]):
            ep.respond(
                request, source, 500, "Server Internal Error", headers=[("Retry-After", "1")]
            )
            return
        if method == "BYE":
            ep.respond(request, source, 200, "OK")
            self._end(EndReason.REMOTE_BYE)
        elif method in ("INVITE", "UPDATE"):
            self._answer_offer(request, source)
        elif method == "OPTIONS":
            ep.respond(request, source, 200, "OK", headers=self.client.capabilities())
        elif method == "INFO":
            ep.respond(request, source, 200, "OK")
            self._dtmf_info(request)
        elif method == "NOTIFY":
            # A REFER's implicit subscription lives in this dialog (RFC 3515 §2.4.4).
            ep.respond(request, source, 200, "OK")
            if self._notifies.full():
                self._notifies.get_nowait()
                SIP_DROPS.add("notify_overflow")
            self._notifies.put_nowait(request)
        elif method in ("REFER", "MESSAGE", "SUBSCRIBE", "PRACK"):
            ep.respond(
                request, source, 405, "Method Not Allowed", headers=self.client.capabilities()
            )
        else:
            ep.respond(request, source, 501, "Not Implemented", headers=self.client.capabilities())

    def _answer_offer(self, request: SipRequest, source: Address) -> None:
        ep = self.client.endpoint
        if self._reinvite_pending and request.method == "INVITE":
            ep.respond(request, source, 491, "Request Pending")
            return
        self.dialog.refresh_target(request)
        headers = [("Contact", self.client.contact())]
        session = parse_session_expires(request)
        if session is not None:
            interval, refresher = session
            refresher = refresher or "uac"
            headers.append(("Session-Expires", f"{interval};refresher={refresher}"))
            if "timer" in (request.headers.get("Supported") or ""):
                headers.append(("Require", "timer"))
            self._timer.start(interval, we_refresh=refresher == "uas")
        body = b""
        if request.body and request.content_type == "application/sdp":
            try:
                body, media = self.sdp.answer(parse_sdp(request.body))
            except SdpError as exc:
                ep.respond(
                    request, source, 488, "Not Acceptable Here", headers=[("Warning", str(exc))]
                )
                return
            self._set_media(media)
        elif request.method == "INVITE":
            body = self.sdp.offer()  # the answer comes in the ACK
        if body:
            headers.append(("Content-Type", "application/sdp"))
        ep.respond(request, source, 200, "OK", headers=headers, body=body)

    def _dtmf_info(self, request: SipRequest) -> None:
        if request.content_type != "application/dtmf-relay" or self.on_dtmf is None:
            return
        for line in request.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                self.on_dtmf(value.strip()[:1])


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a `message/sipfrag` status line (`SIP/2.0 200 OK`), if it is one."""
    first = body.decode("utf-8", "replace").strip().split("\n", 1)[0].split()
    if len(first) >= 2 and first[0].upper().startswith("SIP/") and first[1].isdigit():
        return int(first[1])
    return None
