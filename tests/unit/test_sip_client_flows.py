"""SipClient flows against a scripted in-process UAS on loopback (fast, timer-controlled).

SIPp covers the main dialogs in tests/integration; these cover the corners that a
SIPp scenario expresses badly: exact retransmission counts, Timer B, 407 + 422
retries, 481 for unknown dialogs, OPTIONS/INFO/REFER, garbage on the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from callfleet.telephony.sip import (
    Credentials,
    NegotiatedMedia,
    SipClient,
    SipClientConfig,
    SipRequest,
    SipResponse,
    SipTimers,
    parse_message,
)
from callfleet.telephony.sip.auth import build_authorization, parse_challenge
from callfleet.telephony.sip.message import Headers

FAST = SipTimers(t1=0.02, t2=0.08, t4=0.05)
SDP = (
    b"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class FakeMedia:
    local_port = 30000

    def __init__(self) -> None:
        self.applied: list[NegotiatedMedia] = []

    def apply(self, media: NegotiatedMedia) -> None:
        self.applied.append(media)


class Peer(asyncio.DatagramProtocol):
    """A scripted UAS: every message it receives lands in `inbox`."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.client_addr: tuple[str, int] = ("127.0.0.1", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # On 3.11 the selector datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.client_addr = (addr[0], addr[1])
        self.inbox.put_nowait(parse_message(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def expect(self, method: str, wait_s: float = 2.0) -> SipRequest:
        async with asyncio.timeout(wait_s):
            while True:
                msg = await self.inbox.get()
                if isinstance(msg, SipRequest) and msg.method == method:
                    return msg

    async def expect_response(self, wait_s: float = 2.0) -> SipResponse:
        async with asyncio.timeout(wait_s):
            while True:
                msg = await self.inbox.get()
                if isinstance(msg, SipResponse):
                    return msg

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.client_addr)

    def reply(
        self,
        request: SipRequest,
        status: int,
        reason: str,
        *extra: tuple[str, str],
        tag: str | None = "uas1",
        body: bytes = b"",
    ) -> SipResponse:
        h = Headers()
        for via in request.headers.get_all("Via"):
            h.add("Via", via)
        h.add("From", request.headers.get("From") or "")
        to = request.headers.get("To") or ""
        h.add("To", to if (tag is None or ";tag=" in to) else f"{to};tag={tag}")
        h.add("Call-ID", request.call_id)
        h.add("CSeq", request.headers.get("CSeq") or "")
        h.add("Contact", f"<sip:uas@127.0.0.1:{self.port}>")
        for name, value in extra:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        response = SipResponse(headers=h, body=body, status=status, reason=reason)
        self.send_raw(response.to_bytes())
        return response

    def request(
        self,
        invite: SipRequest,
        method: str,
        cseq: int,
        *extra: tuple[str, str],
        tag: str = "uas1",
        to_tag: str | None = None,
        body: bytes = b"",
    ) -> None:
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKp{method}{cseq}")
        h.add("From", f"<sip:uas@127.0.0.1>;tag={tag}")
        to = (invite.headers.get("From") or "").split(";tag=")[0]
        h.add("To", f"{to};tag={to_tag or invite.from_addr.tag}")
        h.add("Call-ID", invite.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for name, value in extra:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        self.send_raw(SipRequest(headers=h, body=body, method=method, uri="sip:x@h").to_bytes())


Scenario = Callable[[SipClient, Peer, FakeMedia], Awaitable[None]]


def run(scenario: Scenario, **config: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        try:
            async with SipClient(SipClientConfig(timers=FAST, **config)) as client:
                await scenario(client, peer, FakeMedia())
        finally:
            transport.close()

    asyncio.run(main())


def _uri(peer: Peer) -> str:
    return f"sip:bob@127.0.0.1:{peer.port}"


def test_timer_a_retransmits_then_timer_b_gives_up() -> None:
    async def scenario(client: SipClient, peer: Peer, media: FakeMedia) -> None:
        result = await client.invite(_uri(peer), media=media, ring_timeout_s=30)
        assert result.timed_out and result.status == 408
        copies = peer.inbox.qsize()
        assert 6 <= copies <= 7  # at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1 < 64*T1

    run(scenario)


def test_2xx_retransmissions_are_acked_again_and_unknown_dialogs_get_481() -> None:
    async def scenario(client: SipClient, peer: Peer, media: FakeMedia) -> None:
        task = asyncio.create_task(client.invite(_uri(peer), media=media))
        invite = await peer.expect("INVITE")
        ok = peer.reply(invite, 200, "OK", body=SDP)
        result = await task
        assert result.call is not None and media.applied[0].remote_port == 40000
        ack = await peer.expect("ACK")
        assert ack.cseq == (invite.cseq[0], "ACK") and ack.to_addr.tag == "uas1"
        peer.send_raw(ok.to_bytes())
        assert (await peer.expect("ACK")).top_via.branch == ack.top_via.branch
        peer.send_raw(b"\x00garbage\r\n\r\n")
        peer.send_raw(b"\r\n\r\n")
        peer.request(invite, "INFO", 1, to_tag="nosuchdialog")
        assert (await peer.expect_response()).status == 481
        peer.request(invite, "OPTIONS", 2)
        assert (await peer.expect_response()).status == 200
        digits: list[str] = []
        result.call.on_dtmf = digits.append
        peer.request(invite, "INFO", 3, ("Content-Type", "application/dtmf-relay"))
        assert (await peer.expect_response()).status == 200
        peer.request(invite, "FOO", 4)
        assert (await peer.expect_response()).status == 501
        peer.request(invite, "BYE", 5)
        bye_ok = await peer.expect_response()
        assert bye_ok.status == 200 and bye_ok.cseq == (5, "BYE")
        assert result.call.end_reason == "remote-bye"
        peer.request(invite, "BYE", 6)
        assert (await peer.expect_response()).status == 481

    run(scenario)


def test_407_then_422_then_answer() -> None:
    async def scenario(client: SipClient, peer: Peer, media: FakeMedia) -> None:
        creds = Credentials("ai", "s3cret")
        task = asyncio.create_task(client.invite(_uri(peer), media=media, credentials=creds))
        first = await peer.expect("INVITE")
        peer.reply(
            first,
            407,
            "Proxy Authentication Required",
            ("Proxy-Authenticate", 'Digest realm="p", nonce="abc", qop="auth"'),
        )
        assert (await peer.expect("ACK")).top_via.branch == first.top_via.branch
        second = await peer.expect("INVITE")
        assert second.cseq[0] == first.cseq[0] + 1 and second.call_id == first.call_id
        auth = second.headers.get("Proxy-Authorization") or ""
        challenge = parse_challenge('Digest realm="p", nonce="abc", qop="auth"')
        cnonce = auth.split('cnonce="')[1].split('"')[0]
        assert auth == build_authorization(
            challenge, creds, method="INVITE", uri=_uri(peer), cnonce=cnonce
        )
        peer.reply(second, 422, "Session Interval Too Small", ("Min-SE", "3600"))
        third = await peer.expect("INVITE")
        assert third.headers.get("Session-Expires") == "3600"
        assert third.headers.get("Min-SE") == "3600"
        assert third.headers.get("Proxy-Authorization") is not None
        peer.reply(third, 200, "OK", ("Session-Expires", "3600;refresher=uas"), body=SDP)
        result = await task
        assert result.call is not None
        await peer.expect("ACK")
        hangup = asyncio.create_task(result.call.hangup())
        peer.reply(await peer.expect("BYE"), 200, "OK")
        await hangup

    run(scenario, session_expires_s=1800)


def test_second_challenge_for_same_realm_fails() -> None:
    async def scenario(client: SipClient, peer: Peer, media: FakeMedia) -> None:
        task = asyncio.create_task(
            client.invite(_uri(peer), media=media, credentials=Credentials("u", "bad"))
        )
        for _ in range(2):
            invite = await peer.expect("INVITE")
            peer.reply(
                invite, 401, "Unauthorized", ("WWW-Authenticate", 'Digest realm="r", nonce="n"')
            )
        result = await task
        assert result.status == 401 and result.call is None

    run(scenario)


def test_refer_transfer_and_peer_hold_via_update() -> None:
    async def scenario(client: SipClient, peer: Peer, media: FakeMedia) -> None:
        task = asyncio.create_task(client.invite(_uri(peer), media=media))
        invite = await peer.expect("INVITE")
        peer.reply(invite, 180, "Ringing")
        peer.reply(invite, 200, "OK", body=SDP)
        call = (await task).call
        assert call is not None
        peer.request(invite, "UPDATE", 1, body=SDP + b"a=inactive\r\n")
        response = await peer.expect_response()
        assert response.status == 200 and b"a=inactive" in response.body
        assert media.applied[-1].remote_direction == "inactive"
        transfer = asyncio.create_task(call.refer("sip:agent@example.com", timeout_s=30.0))
        refer = await peer.expect("REFER")
        assert refer.headers.get("Refer-To") == "<sip:agent@example.com>"
        peer.reply(refer, 202, "Accepted")
        peer.request(invite, "NOTIFY", 2, ("Event", "refer"), ("Content-Type", "message/sipfrag"))
        peer.request(invite, "NOTIFY", 3, body=b"SIP/2.0 200 OK\r\n")
        assert await transfer

    run(scenario)


def test_ring_timeout_before_any_provisional_waits_then_cancels() -> None:
    async def scenario(client: SipClient, peer: Peer, media: FakeMedia) -> None:
        task = asyncio.create_task(client.invite(_uri(peer), media=media, ring_timeout_s=0.1))
        invite = await peer.expect("INVITE")
        await asyncio.sleep(0.2)
        assert not task.done()
        peer.reply(invite, 100, "Trying", tag=None)
        cancel = await peer.expect("CANCEL")
        assert cancel.top_via.branch == invite.top_via.branch
        assert cancel.to_addr.tag is None and cancel.cseq == (invite.cseq[0], "CANCEL")
        peer.reply(cancel, 200, "OK")
        peer.reply(invite, 487, "Request Terminated")
        result = await task
        assert (result.status, result.cancelled_by) == (487, "ring-timeout")
        await peer.expect("ACK")

    run(scenario)
