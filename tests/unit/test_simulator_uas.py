"""The phone simulator's UAS side against a scripted raw SIP peer on loopback.

These cover what a SIP client hides: INVITE retransmissions answered with the last
response (and recorded as retransmissions), Timer G for non-2xx finals until the
ACK, 2xx retransmission until the ACK and the BYE when it never comes, CANCEL,
in-dialog re-INVITE/UPDATE/OPTIONS/INFO/BYE, 481 and 500 for stale requests,
out-of-dialog methods, and garbage on the socket.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from callfleet.simulator import voices
from callfleet.simulator.sip_server import PhoneSimulator, SimulatorConfig
from callfleet.telephony.rtp import RtpPacket
from callfleet.telephony.sip import SipParseError, SipRequest, SipResponse, SipTimers
from callfleet.telephony.sip.message import Headers, SipMessage, parse_message
from callfleet.telephony.sip.sdp import parse_sdp

FAST = SipTimers(t1=0.02, t2=0.08, t4=0.05)
HUMAN_LONG = "+12125550139"  # silent; rings 6 s, talks 53 s (at 0.05: 0.3 s and 2.65 s)
HUMAN = "+12125550100"
NO_ANSWER = "+12125550170"
BUSY = "+12125550160"


def _sdp(port: int, codecs: str = "0 8 101") -> bytes:
    lines = [
        "v=0",
        "o=peer 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # On 3.11 the selector datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.inbox.put_nowait((data, (addr[0], addr[1])))


async def _bind() -> tuple[_Socket, int]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(_Socket, local_addr=("127.0.0.1", 0))
    assert proto.transport is not None
    return proto, int(proto.transport.get_extra_info("sockname")[1])


class RawPeer:
    """A hand-driven UAC: builds requests, sends raw bytes, and reads what comes back."""

    def __init__(self, sock: _Socket, port: int, sim: PhoneSimulator) -> None:
        self.sock = sock
        self.port = port
        self.sim = sim
        self.seen: list[SipMessage] = []
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.from_tag = secrets.token_hex(4)
        self.to_tag: str | None = None
        self.number = ""

    @classmethod
    async def open(cls, sim: PhoneSimulator) -> RawPeer:
        sock, port = await _bind()
        return cls(sock, port, sim)

    def close(self) -> None:
        if self.sock.transport is not None:
            self.sock.transport.close()

    def request(
        self,
        method: str,
        *,
        cseq: int,
        branch: str | None = None,
        to_tag: str | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        uri: str | None = None,
    ) -> SipRequest:
        host, port = self.sim.address
        h = Headers()
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:+15550199@127.0.0.1>;tag={self.from_tag}")
        to = f"<sip:{self.number}@{host}:{port}>"
        h.add("To", to + (f";tag={to_tag}" if to_tag else ""))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("Contact", f"<sip:peer@127.0.0.1:{self.port}>")
        for name, value in headers or []:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        target = uri or f"sip:{self.number}@{host}:{port}"
        return SipRequest(headers=h, body=body, method=method, uri=target)

    def invite(self, number: str, media_port: int, *, body: bytes | None = None) -> SipRequest:
        self.number = number
        return self.request("INVITE", cseq=1, body=_sdp(media_port) if body is None else body)

    def in_dialog(self, method: str, cseq: int, body: bytes = b"", **kw: Any) -> SipRequest:
        assert self.to_tag is not None
        return self.request(method, cseq=cseq, to_tag=self.to_tag, body=body, **kw)

    def ack(self, invite: SipRequest, response: SipResponse) -> SipRequest:
        """ACK for a 2xx (new branch) or a non-2xx (the INVITE's branch)."""
        tag = response.to_addr.tag
        if response.status >= 300:
            branch = invite.top_via.branch
            ack = self.request("ACK", cseq=invite.cseq[0], branch=branch, to_tag=tag)
        else:
            ack = self.request("ACK", cseq=invite.cseq[0], to_tag=tag)
        ack.uri = invite.uri
        return ack

    def send(self, message: SipMessage) -> None:
        self.send_raw(message.to_bytes())

    def send_raw(self, data: bytes) -> None:
        assert self.sock.transport is not None
        self.sock.transport.sendto(data, self.sim.address)

    async def expect(
        self, want: Callable[[SipMessage], bool], timeout_s: float = 2.0
    ) -> SipMessage:
        """The next message matching `want`; the others are kept in `seen` only."""
        async with asyncio.timeout(timeout_s):
            while True:
                data, _ = await self.sock.inbox.get()
                try:
                    message = parse_message(data)
                except SipParseError:
                    continue
                self.seen.append(message)
                if want(message):
                    return message

    async def response(self, status: int, method: str, timeout_s: float = 2.0) -> SipResponse:
        def match(m: SipMessage) -> bool:
            return isinstance(m, SipResponse) and m.status == status and m.cseq[1] == method

        found = await self.expect(match, timeout_s)
        assert isinstance(found, SipResponse)
        if found.to_addr.tag and method == "INVITE":
            self.to_tag = found.to_addr.tag
        return found

    async def quiet(self, seconds: float) -> list[SipMessage]:
        """Everything that arrives within `seconds`."""
        got: list[SipMessage] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    data, _ = await self.sock.inbox.get()
            except TimeoutError:
                break
            try:
                message = parse_message(data)
            except SipParseError:
                continue
            self.seen.append(message)
            got.append(message)
        return got

    def count(self, status: int, method: str) -> int:
        return sum(
            1
            for m in self.seen
            if isinstance(m, SipResponse) and m.status == status and m.cseq[1] == method
        )


def _run(
    config: SimulatorConfig, body: Callable[[PhoneSimulator, RawPeer], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with PhoneSimulator(config) as sim:
            peer = await RawPeer.open(sim)
            try:
                await body(sim, peer)
            finally:
                peer.close()

    asyncio.run(main())


def test_retransmitted_invite_gets_the_last_response_and_is_recorded() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        invite = peer.invite(NO_ANSWER, 40000)
        peer.send(invite)
        await peer.response(100, "INVITE")
        await peer.response(180, "INVITE")
        peer.send(invite)  # a retransmission: same branch
        await peer.response(180, "INVITE")
        assert [r.is_retransmission for r in sim.invites] == [False, True]
        assert {r.branch for r in sim.invites} == {invite.top_via.branch}
        assert sim.calls_by_number() == {NO_ANSWER: [peer.call_id]}

        cancel = peer.request("CANCEL", cseq=1, branch=invite.top_via.branch)
        peer.send(cancel)
        await peer.response(200, "CANCEL")
        final = await peer.response(487, "INVITE")
        await peer.response(487, "INVITE", timeout_s=0.5)  # Timer G: resent until the ACK
        peer.send(peer.ack(invite, final))
        await peer.quiet(0.05)
        before = peer.count(487, "INVITE")
        await peer.quiet(0.4)
        assert peer.count(487, "INVITE") == before, "487 still retransmitted after the ACK"
        call = sim.calls[peer.call_id]
        assert call.responses == [100, 180, 487]
        assert call.requests == ["CANCEL", "ACK"]
        assert call.ended_by == "caller"
        assert sim.active_calls == 0

    _run(SimulatorConfig(time_scale=0.05, timers=FAST), body)


def test_2xx_is_retransmitted_until_the_ack_then_the_phone_hangs_up() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        invite = peer.invite(HUMAN, 40000)
        peer.send(invite)
        ok = await peer.response(200, "INVITE")
        again = await peer.response(200, "INVITE", timeout_s=0.5)
        assert again.to_addr.tag == ok.to_addr.tag and again.body == ok.body
        assert parse_sdp(ok.body).media[0].port >= 40000
        peer.send(peer.ack(invite, ok))
        await peer.quiet(0.05)
        before = peer.count(200, "INVITE")
        bye = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
        assert isinstance(bye, SipRequest)
        assert bye.from_addr.tag == ok.to_addr.tag and bye.to_addr.tag == peer.from_tag
        assert bye.uri == f"sip:peer@127.0.0.1:{peer.port}"
        peer.send(_response_to(bye, 200, "OK"))
        await peer.quiet(0.2)
        assert peer.count(200, "INVITE") == before, "200 still retransmitted after the ACK"
        call = sim.calls[peer.call_id]
        assert (call.requests, call.ended_by) == (["ACK"], "simulator")
        await sim.wait_idle(1.0)

    _run(SimulatorConfig(time_scale=0, fast_hold_s=0.4, timers=FAST), body)


def test_without_an_ack_the_phone_gives_up_and_hangs_up() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        peer.send(peer.invite(HUMAN, 40000))
        await peer.response(200, "INVITE")
        bye = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "BYE", 3.0)
        assert isinstance(bye, SipRequest)
        # 64*T1 = 1.28 s of retransmissions: T1 doubling, capped at T2.
        assert 6 <= peer.count(200, "INVITE") <= 25
        peer.send(_response_to(bye, 200, "OK"))
        assert sim.calls[peer.call_id].ended_by == "simulator"

    _run(SimulatorConfig(time_scale=0, fast_hold_s=0.1, timers=FAST), body)


def test_requests_inside_the_call() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        media_a, port_a = await _bind()
        media_b, port_b = await _bind()
        try:
            invite = peer.invite(HUMAN_LONG, port_a)
            peer.send(invite)
            await peer.response(180, "INVITE")
            ok = await peer.response(200, "INVITE")
            answer = parse_sdp(ok.body).media[0]
            assert answer.formats == [0, 101] and answer.direction == "sendrecv"
            peer.send(peer.ack(invite, ok))
            await _rtp_arrives(media_a)

            reinvite = peer.in_dialog("INVITE", 2, _sdp(port_b, "8 101"))
            peer.send(reinvite)
            ok2 = await peer.response(200, "INVITE")
            assert parse_sdp(ok2.body).media[0].formats == [8, 101]  # PCMA now
            assert [r.in_dialog for r in sim.invites] == [False, True]
            peer.send(peer.ack(reinvite, ok2))
            await _rtp_arrives(media_b)

            peer.send(peer.in_dialog("UPDATE", 3, _sdp(port_a)))
            updated = await peer.response(200, "UPDATE")
            assert parse_sdp(updated.body).media[0].formats == [0, 101]

            late_offer = peer.in_dialog("INVITE", 4)  # no SDP: we get an offer, answer in ACK
            peer.send(late_offer)
            ok4 = await peer.response(200, "INVITE")
            assert parse_sdp(ok4.body).media[0].port == answer.port
            ack4 = peer.ack(late_offer, ok4)
            ack4.body = _sdp(port_b)
            ack4.headers.add("Content-Type", "application/sdp")
            peer.send(ack4)
            await _rtp_arrives(media_b)

            peer.send(peer.in_dialog("OPTIONS", 5))
            await peer.response(200, "OPTIONS")
            info = peer.in_dialog("INFO", 6, headers=[("Content-Type", "application/dtmf-relay")])
            info.body = b"Signal=5\r\nDuration=160\r\n"
            peer.send(info)
            await peer.response(200, "INFO")
            peer.send(peer.in_dialog("INFO", 3))  # an old CSeq
            await peer.response(500, "INFO")
            peer.send(peer.request("BYE", cseq=7, to_tag="not-ours"))
            await peer.response(481, "BYE")
            peer.send(peer.in_dialog("BYE", 8))
            await peer.response(200, "BYE")
            peer.send(peer.in_dialog("BYE", 9))
            await peer.response(481, "BYE")

            call = sim.calls[peer.call_id]
            assert call.dtmf == ["5"]
            assert call.requests == [
                "ACK",
                "INVITE",
                "ACK",
                "UPDATE",
                "INVITE",
                "ACK",
                "OPTIONS",
                "INFO",
                "BYE",
            ]
            assert call.ended_by == "caller"
            await sim.wait_idle(1.0)
        finally:
            for sock in (media_a, media_b):
                assert sock.transport is not None
                sock.transport.close()

    _run(SimulatorConfig(time_scale=0.05, timers=FAST), body)


def test_rtp_latches_to_where_the_caller_really_sends_from() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        advertised, advertised_port = await _bind()  # what the SDP says (behind a NAT, say)
        actual, _ = await _bind()  # where the caller's RTP really comes from
        try:
            invite = peer.invite(HUMAN_LONG, advertised_port)
            peer.send(invite)
            ok = await peer.response(200, "INVITE")
            peer.send(peer.ack(invite, ok))
            await _rtp_arrives(advertised)
            sim_rtp = ("127.0.0.1", parse_sdp(ok.body).media[0].port)
            assert actual.transport is not None
            for seq in range(3):
                packet = RtpPacket(0, seq, 160 * seq, 0x1234, b"\xff" * 160, marker=seq == 0)
                actual.transport.sendto(packet.to_bytes(), sim_rtp)
            await _rtp_arrives(actual)
            peer.send(peer.in_dialog("BYE", 2))
            await peer.response(200, "BYE")
            await sim.wait_idle(1.0)
            assert sim.calls[peer.call_id].packets_received == 3
        finally:
            for sock in (advertised, actual):
                assert sock.transport is not None
                sock.transport.close()

    _run(SimulatorConfig(time_scale=0.05, timers=FAST), body)


def test_out_of_dialog_requests_and_garbage() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        for junk in (
            b"",
            b"\r\n\r\n",
            bytes(range(256)),
            b"INVITE sip:x SIP/2.0\r\n\r\n",
            peer.invite(BUSY, 40000).to_bytes()[:-40],  # truncated body
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\r\n",
        ):
            peer.send_raw(junk)
        peer.number = BUSY
        peer.send(peer.request("OPTIONS", cseq=1))
        options = await peer.response(200, "OPTIONS")
        assert "INVITE" in (options.headers.get("Allow") or "")
        peer.send(peer.request("REGISTER", cseq=2))
        await peer.response(405, "REGISTER")
        peer.send(peer.request("FROB", cseq=3))
        await peer.response(501, "FROB")
        peer.send(peer.request("BYE", cseq=4))
        await peer.response(481, "BYE")
        peer.send(peer.request("CANCEL", cseq=5))
        await peer.response(481, "CANCEL")
        peer.send(peer.request("ACK", cseq=6, to_tag="stray"))
        weird = peer.request("INVITE", cseq=7, body=_sdp(40000), uri="mailto:someone@example.com")
        peer.send(weird)
        await peer.response(416, "INVITE")
        peer.send(peer.request("INVITE", cseq=8, body=_sdp(40000, "18")))  # only G.729
        refused = await peer.response(488, "INVITE")
        peer.send(peer.ack(peer.request("INVITE", cseq=8), refused))

        first = peer.call_id
        peer.call_id = "second@127.0.0.1"
        invite = peer.invite(BUSY, 40000)
        peer.send(invite)
        busy = await peer.response(486, "INVITE")
        assert busy.headers.get("Retry-After") is None
        peer.send(peer.ack(invite, busy))
        assert sim.calls["second@127.0.0.1"].responses == [100, 486]
        assert sim.calls[first].responses == [488]
        assert sim.calls_by_number()[BUSY] == [first, "second@127.0.0.1"]
        assert [r.to_number for r in sim.invites][:1] == ["mailto:someone@example.com"]

    _run(SimulatorConfig(time_scale=0, timers=FAST), body)


def test_unknown_numbers_and_numbers_without_plus() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        invite = peer.invite("+447700900123", 40000)
        peer.send(invite)
        missing = await peer.response(404, "INVITE")
        peer.send(peer.ack(invite, missing))
        peer.call_id = "plain@127.0.0.1"
        invite = peer.invite("12125550160", 40000)  # busy, written without the +
        peer.send(invite)
        busy = await peer.response(486, "INVITE")
        peer.send(peer.ack(invite, busy))
        assert sim.calls["plain@127.0.0.1"].number == "+12125550160"
        assert set(sim.calls_by_number()) == {"+447700900123", "+12125550160"}

    _run(SimulatorConfig(time_scale=0, timers=FAST), body)


def test_refer_is_accepted_notified_and_followed_by_our_bye() -> None:
    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        invite = peer.invite(HUMAN, 40000)
        peer.send(invite)
        await peer.response(180, "INVITE")  # no REFER before the answer
        peer.send(peer.in_dialog("REFER", 2, headers=[("Refer-To", "<sip:x@example.com>")]))
        await peer.response(403, "REFER")

        ok = await peer.response(200, "INVITE")
        peer.send(peer.ack(invite, ok))
        peer.send(peer.in_dialog("REFER", 3))  # no Refer-To
        await peer.response(400, "REFER")
        target = "sip:+14155550123@agents.example.com;transport=tcp"
        peer.send(peer.in_dialog("REFER", 4, headers=[("Refer-To", f"<{target}>")]))
        accepted = await peer.response(202, "REFER")
        assert accepted.headers.get("Contact")
        notify = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "NOTIFY")
        assert isinstance(notify, SipRequest)
        assert notify.headers.get("Event") == "refer"
        assert notify.headers.get("Subscription-State") == "terminated;reason=noresource"
        assert notify.content_type == "message/sipfrag"
        assert notify.body.decode().startswith("SIP/2.0 200 OK")
        assert notify.from_addr.tag == ok.to_addr.tag and notify.to_addr.tag == peer.from_tag
        peer.send(_response_to(notify, 200, "OK"))
        loop = asyncio.get_running_loop()
        notified = loop.time()
        bye = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
        assert isinstance(bye, SipRequest)
        assert 0.25 <= loop.time() - notified < 1.0  # transfer_hangup_s, not talk_s
        assert bye.cseq[0] > notify.cseq[0]
        peer.send(_response_to(bye, 200, "OK"))
        await sim.wait_idle(1.0)
        call = sim.calls[peer.call_id]
        assert call.transferred_to == target
        assert (call.requests, call.ended_by) == (["REFER", "ACK", "REFER", "REFER"], "simulator")

    config = SimulatorConfig(time_scale=0.05, transfer_hangup_s=0.3, timers=FAST)
    _run(config, body)


def test_fast_mode_renders_nothing_sends_no_rtp_and_listens_to_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_speech(*args: object, **kwargs: object) -> None:
        raise AssertionError("fast mode must not render speech or run a VAD")

    monkeypatch.setattr(voices, "speak_all", no_speech)
    monkeypatch.setattr(voices, "Conversation", no_speech)

    async def body(sim: PhoneSimulator, peer: RawPeer) -> None:
        media, port = await _bind()
        try:
            invite = peer.invite(HUMAN, port)
            peer.send(invite)
            ok = await peer.response(200, "INVITE")
            peer.send(peer.ack(invite, ok))
            sim_rtp = ("127.0.0.1", parse_sdp(ok.body).media[0].port)
            assert media.transport is not None
            for seq in range(5):
                packet = RtpPacket(0, seq, 160 * seq, 0x1234, b"\x00" * 160, marker=seq == 0)
                media.transport.sendto(packet.to_bytes(), sim_rtp)
            bye = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
            assert isinstance(bye, SipRequest)
            peer.send(_response_to(bye, 200, "OK"))
            await sim.wait_idle(1.0)
            call = sim.calls[peer.call_id]
            # fast mode neither sends RTP nor processes the caller's (it arrives harmlessly)
            assert (call.packets_sent, call.packets_received) == (0, 0)
            assert (call.said, call.latencies_ms, bytes(call.heard)) == ([], [], b"")
            assert call.recording_from is None and call.recording_path is None
        finally:
            assert media.transport is not None
            media.transport.close()

    _run(SimulatorConfig(time_scale=0, fast_hold_s=0.3, timers=FAST), body)


def _response_to(request: SipRequest, status: int, reason: str) -> SipResponse:
    h = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        h.add(name, request.headers.get(name) or "")
    return SipResponse(headers=h, status=status, reason=reason)


async def _rtp_arrives(sock: _Socket, timeout_s: float = 2.0) -> None:
    while not sock.inbox.empty():
        sock.inbox.get_nowait()
    async with asyncio.timeout(timeout_s):
        data, _ = await sock.inbox.get()
        data, _ = await sock.inbox.get()  # a second one: not a stale packet in flight
    assert data[0] >> 6 == 2
