"""Hostile media and signalling peers on loopback: what a stranger or a broken trunk sends
must not reach a call, keep it alive, or take down the signalling it shares."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from callfleet.telephony.rtp import RtpSession
from callfleet.telephony.rtp.drops import RTP_DROPS
from callfleet.telephony.rtp.packet import RtpPacket
from callfleet.telephony.rtp.rtcp import build_report
from callfleet.telephony.sip import (
    NegotiatedMedia,
    SipClient,
    SipClientConfig,
    SipTimers,
    parse_message,
)
from callfleet.telephony.sip.call import MAX_QUEUED_NOTIFIES
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.telephony.sip.invite import MAX_QUEUED_PROVISIONALS
from callfleet.telephony.sip.message import Headers, SipRequest, SipResponse

FAST = SipTimers(t1=0.05, t2=0.2, t4=0.1)


class FakeMedia:
    local_port = 30000

    def apply(self, media: object) -> None:
        del media


def _sdp(extra: bytes = b"") -> bytes:
    return (
        b"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" + extra
    )


def _ok(invite: SipRequest, body: bytes) -> bytes:
    h = Headers()
    for via in invite.headers.get_all("Via"):
        h.add("Via", via)
    h.add("From", invite.headers.get("From") or "")
    h.add("To", f"{invite.headers.get('To')};tag=uas-{invite.call_id[:6]}")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", invite.headers.get("CSeq") or "")
    h.add("Contact", "<sip:uas@127.0.0.1;transport=tcp>")
    h.add("Content-Type", "application/sdp")
    return SipResponse(headers=h, body=body, status=200, reason="OK").to_bytes()


async def _read_message(reader: asyncio.StreamReader) -> SipRequest | SipResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return parse_message(head + body, stream=True)


def _reinvite(invite: SipRequest, ok: SipResponse, body: bytes) -> bytes:
    """The trunk's in-dialog re-INVITE for the call `invite` set up."""
    h = Headers()
    h.add("Via", "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKreinvite1")
    h.add("From", ok.headers.get("To") or "")
    h.add("To", invite.headers.get("From") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", "1 INVITE")
    h.add("Contact", "<sip:uas@127.0.0.1;transport=tcp>")
    h.add("Content-Type", "application/sdp")
    return SipRequest(headers=h, body=body, method="INVITE", uri="sip:x@h").to_bytes()


def test_sdp_ptime_inf_over_tcp_does_not_kill_the_shared_connection() -> None:
    """A trunk answers one call with `a=ptime:inf` (we hang it up: 488), answers the
    next normally on the same TCP connection, then re-INVITEs it with `a=ptime:inf`
    (488 again); the connection and the second call survive both."""
    seen: list[str] = []

    async def trunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            for _ in range(50):  # bounded: INVITEs, ACKs, BYEs of two calls
                message = await _read_message(reader)
                if isinstance(message, SipResponse):
                    seen.append(f"{message.status} {message.cseq[1]}")
                    continue
                seen.append(message.method)
                if message.method == "BYE":
                    writer.write(_ok(message, b""))
                elif message.method == "INVITE":
                    body = _sdp(b"a=ptime:inf\r\n") if answered == 0 else _sdp()
                    ok = _ok(message, body)
                    writer.write(ok)
                    answered += 1
                elif message.method == "ACK" and answered == 2:
                    invite = second_invite[0]
                    reply = parse_message(_ok(invite, b""), stream=True)
                    assert isinstance(reply, SipResponse)
                    writer.write(_reinvite(invite, reply, _sdp(b"a=ptime:inf\r\n")))
                if message.method == "INVITE" and answered == 2:
                    second_invite.append(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection at the end
        finally:
            writer.close()

    second_invite: list[SipRequest] = []

    async def scenario() -> None:
        server = await asyncio.start_server(trunk, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = SipClientConfig(transport="tcp", timers=FAST)
        try:
            async with SipClient(config) as client, asyncio.timeout(10):
                target = f"sip:bob@127.0.0.1:{port};transport=tcp"
                proxy = ("127.0.0.1", port)  # in-dialog requests go to the trunk, as SipCarrier's
                first = await client.invite(
                    target, media=FakeMedia(), ring_timeout_s=2, proxy=proxy
                )
                assert first.status == 488 and first.call is None
                second = await client.invite(
                    target, media=FakeMedia(), ring_timeout_s=2, proxy=proxy
                )
                assert second.call is not None, f"second call not answered: {second}"
                assert second.status == 200
                for _ in range(100):  # bounded wait for the answer to the re-INVITE
                    if "488 INVITE" in seen:
                        break
                    await asyncio.sleep(0.02)
                assert "488 INVITE" in seen, seen
                assert not second.call.ended.is_set()
                await second.call.hangup()
                assert seen.count("BYE") == 2, seen  # the first call's and the second's
        finally:
            server.close()

    asyncio.run(scenario())


def _ringing(invite: SipRequest) -> bytes:
    h = Headers()
    for via in invite.headers.get_all("Via"):
        h.add("Via", via)
    h.add("From", invite.headers.get("From") or "")
    h.add("To", f"{invite.headers.get('To')};tag=uas-{invite.call_id[:6]}")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", invite.headers.get("CSeq") or "")
    return SipResponse(headers=h, status=180, reason="Ringing").to_bytes()


def _notify(invite: SipRequest, ok: SipResponse, n: int) -> bytes:
    """The trunk's n-th in-dialog NOTIFY (its own branch and CSeq: not a retransmission)."""
    h = Headers()
    h.add("Via", f"SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKnotify{n}")
    h.add("From", ok.headers.get("To") or "")
    h.add("To", invite.headers.get("From") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{n + 1} NOTIFY")
    h.add("Event", "refer")
    h.add("Subscription-State", "active")
    h.add("Contact", "<sip:uas@127.0.0.1;transport=tcp>")
    h.add("Content-Type", "message/sipfrag")
    body = b"SIP/2.0 100 Trying\r\n"
    return SipRequest(headers=h, body=body, method="NOTIFY", uri="sip:x@h").to_bytes()


def test_a_flood_of_ringing_and_notifies_is_bounded_and_counted() -> None:
    """A trunk answers an INVITE with 500 180s in one write, then sends 500 in-dialog
    NOTIFYs nobody asked for (no transfer pending): the INVITE keeps at most
    MAX_QUEUED_PROVISIONALS of the 180s and the call at most MAX_QUEUED_NOTIFIES
    NOTIFYs, the rest are counted as drops, and the call still answers and hangs up
    (before, both queues grew by every message the peer cared to send)."""
    flood = 500
    notified = asyncio.Event()

    async def trunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                message = await _read_message(reader)
                if isinstance(message, SipResponse):
                    if message.cseq[1] == "NOTIFY" and message.cseq[0] == flood:
                        notified.set()  # the client has answered the last one
                    continue
                if message.method == "INVITE":
                    writer.write(b"".join(_ringing(message) for _ in range(flood)))
                    invite = message
                    writer.write(_ok(message, _sdp()))
                elif message.method == "ACK":
                    ok = parse_message(_ok(invite, b""), stream=True)
                    assert isinstance(ok, SipResponse)
                    writer.write(b"".join(_notify(invite, ok, n) for n in range(flood)))
                elif message.method == "BYE":
                    writer.write(_ok(message, b""))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(trunk, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = SipClientConfig(transport="tcp", timers=FAST)
        before = SIP_DROPS.snapshot()
        try:
            async with SipClient(config) as client, asyncio.timeout(20):
                result = await client.invite(
                    f"sip:bob@127.0.0.1:{port};transport=tcp",
                    media=FakeMedia(),
                    ring_timeout_s=5,
                    proxy=("127.0.0.1", port),
                )
                assert result.status == 200 and result.call is not None, result
                await notified.wait()
                call = result.call
                assert call._notifies.qsize() == MAX_QUEUED_NOTIFIES
                after = SIP_DROPS.snapshot()
                dropped = after.get("notify_overflow", 0) - before.get("notify_overflow", 0)
                assert dropped == flood - MAX_QUEUED_NOTIFIES
                ringing = after.get("provisional_overflow", 0) - before.get(
                    "provisional_overflow", 0
                )
                # (the INVITE may read a few while they arrive, making room for as many)
                assert flood - 2 * MAX_QUEUED_PROVISIONALS <= ringing < flood
                assert not call.ended.is_set()
                await call.hangup()
        finally:
            server.close()

    asyncio.run(scenario())


# -- RTP: only the SDP's address, latching only from the trunk's own address ----------


class _Sink(asyncio.DatagramProtocol):
    """A UDP socket that counts what reaches it."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received += 1


async def _udp(host: str, port: int = 0) -> tuple[asyncio.DatagramTransport, _Sink]:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(_Sink, local_addr=(host, port))
    return cast(asyncio.DatagramTransport, transport), sink


def _media(port: int) -> NegotiatedMedia:
    return NegotiatedMedia("127.0.0.1", port, 0, "PCMU", 101, "sendrecv")


INJECTOR = "127.0.0.5"
"""Another loopback address: a stranger, not the trunk (127.0.0.1)."""


def test_rtp_injector_is_dropped_and_counted_and_the_real_peer_works() -> None:
    """An injector's RTP never reaches on_audio, it never gets our audio, its RTCP does
    not keep a dead stream alive; the SDP's peer then works; the drop counter rises."""

    async def scenario() -> None:
        ours = await RtpSession.open(
            rtcp_interval_s=0.1, inactivity_timeout_s=0.4, latch_host="127.0.0.1"
        )
        peer = await RtpSession.open(rtcp_interval_s=0.1)
        heard: list[bytes] = []
        ours.on_audio = heard.append
        rtp_in, rtp_sink = await _udp(INJECTOR)
        rtcp_in, rtcp_sink = await _udp(INJECTOR, rtp_in.get_extra_info("sockname")[1] + 1)
        before = RTP_DROPS.snapshot()
        try:
            ours.apply(_media(peer.local_port))  # the SDP names the peer; it is silent
            rr = build_report(1234, "x@y", stats=None, sender=None, now_s=0.0)
            for n in range(40):  # 0.8 s of injected audio and RTCP
                packet = RtpPacket(0, n, n * 160, 4321, b"\x00" * 160, n == 0)
                rtp_in.sendto(packet.to_bytes(), ("127.0.0.1", ours.local_port))
                rtcp_in.sendto(rr, ("127.0.0.1", ours.local_port + 1))
                await asyncio.sleep(0.02)
            assert heard == [], "the injector's audio reached the agent"
            assert ours.packets_received == 0
            assert rtp_sink.received == 0 and rtcp_sink.received == 0, "we sent to the injector"
            assert ours.inactive.is_set(), "the injector's RTCP kept a dead stream alive"
            after = RTP_DROPS.snapshot()
            assert after.get("unexpected_source", 0) - before.get("unexpected_source", 0) >= 40
            assert after.get("rtcp_unexpected_source", 0) > before.get("rtcp_unexpected_source", 0)

            peer.apply(_media(ours.local_port))  # the legitimate peer starts talking
            await asyncio.sleep(0.5)
            assert ours.packets_received > 15 and len(heard) > 15
            assert peer.packets_received > 15, "our audio reached the SDP's peer"
            assert rtp_sink.received == 0
        finally:
            rtp_in.close()
            rtcp_in.close()
            await ours.close()
            await peer.close()

    asyncio.run(scenario())


def test_a_refused_media_address_gets_nothing_until_an_answer_mends_it() -> None:
    """An early answer (183) names a refused address: nothing is sent there and the
    stream is marked refused; the final answer names an allowed one: the stream is
    mended and our audio reaches it. A re-INVITE back to the refused address stops
    the sending again."""

    def policy(host: str) -> str | None:
        return "a private address" if host == "127.0.0.2" else None

    async def scenario() -> None:
        ours = await RtpSession.open(rtcp_interval_s=0.1, media_policy=policy)
        refused_in, refused_sink = await _udp("127.0.0.2")
        allowed_in, allowed_sink = await _udp("127.0.0.1")
        refused = NegotiatedMedia(
            "127.0.0.2", refused_in.get_extra_info("sockname")[1], 0, "PCMU", 101, "sendrecv"
        )
        allowed = _media(allowed_in.get_extra_info("sockname")[1])
        try:
            ours.apply(refused)
            await asyncio.sleep(0.3)
            assert refused_sink.received == 0
            assert ours.refused is not None and "127.0.0.2" in ours.refused
            assert ours.inactive.is_set()
            ours.apply(allowed)
            await asyncio.sleep(0.3)
            assert ours.refused is None and not ours.inactive.is_set()
            assert allowed_sink.received > 5
            ours.apply(refused)
            sent = allowed_sink.received
            await asyncio.sleep(0.3)
            assert allowed_sink.received <= sent + 1  # one packet may be in flight
            assert refused_sink.received == 0 and ours.refused is not None
        finally:
            await ours.close()
            refused_in.close()
            allowed_in.close()

    asyncio.run(scenario())


def test_rtp_latches_to_a_nat_port_only_on_the_trunk_address() -> None:
    """The SDP names a wrong port (NAT): a stream from the trunk's own address is
    followed; without a trunk address nothing but the SDP's port is accepted."""

    async def scenario(latch_host: str | None) -> int:
        ours = await RtpSession.open(latch_host=latch_host)
        peer = await RtpSession.open()
        try:
            ours.apply(_media(9))
            peer.apply(_media(ours.local_port))
            await asyncio.sleep(0.3)
            return ours.packets_received
        finally:
            await ours.close()
            await peer.close()

    assert asyncio.run(scenario("127.0.0.1")) > 5
    assert asyncio.run(scenario(None)) == 0
    assert asyncio.run(scenario(INJECTOR)) == 0


def test_rtp_drops_are_in_metrics(server_factory: Any) -> None:
    """The process-wide counter is in /metrics, by reason."""

    async def inject() -> None:
        ours = await RtpSession.open(latch_host="127.0.0.1")
        sender, _ = await _udp(INJECTOR)
        try:
            ours.apply(_media(9))
            for n in range(5):
                packet = RtpPacket(0, n, n * 160, 1, b"\x00" * 160, False)
                sender.sendto(packet.to_bytes(), ("127.0.0.1", ours.local_port))
                await asyncio.sleep(0.02)
        finally:
            sender.close()
            await ours.close()

    asyncio.run(inject())
    server = server_factory()
    with server.client() as client:
        text = client.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("callfleet_rtp_packets_dropped")]
    counts = {line.split("{")[1].split("}")[0]: float(line.split()[-1]) for line in lines}
    assert counts.get('reason="unexpected_source"', 0) >= 5, text[-2000:]
