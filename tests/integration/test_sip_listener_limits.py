"""The SIP listener against hostile peers on loopback (real UDP and TCP sockets).

Anyone who reaches the SIP port can send: a flood of transactions stays under the
table's cap, a huge Content-Length closes the connection, connections past the cap
are refused, idle ones time out, and a stranger's INVITE gets nothing and leaves
no state. 127.0.0.1 plays the trunk (trusted by configuration, as an operator
would list it); 127.0.0.5 is the stranger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from callfleet.config import Settings
from callfleet.telephony.sip import SipClient, SipClientConfig, SipLimits, SipTimers
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.telephony.sip.message import Headers, SipRequest, parse_message

FAST = SipTimers(t1=0.05, t2=0.2, t4=0.1)
TRUNK = "127.0.0.1"
STRANGER = "127.0.0.5"


def _request(method: str, n: int, host: str, port: int, transport: str = "UDP") -> bytes:
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport} {host}:{port};branch=z9hG4bKflood{n}")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:x@{host}>;tag=f{n}")
    h.add("To", "<sip:callfleet@127.0.0.1>")
    h.add("Call-ID", f"flood-{n}@{host}")
    h.add("CSeq", f"1 {method}")
    h.add("Contact", f"<sip:x@{host}:{port}>")
    return SipRequest(headers=h, method=method, uri="sip:callfleet@127.0.0.1").to_bytes()


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        message = parse_message(data)
        self.statuses.append(int(getattr(message, "status", 0)))


def _run(scenario: Callable[[SipClient], Awaitable[None]], transport: str, **limits: Any) -> None:
    async def main() -> None:
        config = SipClientConfig(transport=transport, timers=FAST, limits=SipLimits(**limits))
        async with SipClient(config) as client, asyncio.timeout(20):
            await scenario(client)

    asyncio.run(main())


async def _udp_peer(host: str) -> tuple[asyncio.DatagramTransport, _Inbox]:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(host, 0))
    return cast(asyncio.DatagramTransport, transport), inbox


def test_a_flood_of_transactions_stays_under_the_cap() -> None:
    async def scenario(client: SipClient) -> None:
        sock, inbox = await _udp_peer(TRUNK)
        try:
            port = sock.get_extra_info("sockname")[1]
            for n in range(400):  # distinct branches: 400 distinct server transactions
                sock.sendto(_request("OPTIONS", n, TRUNK, port), (TRUNK, client.port))
                if n % 50 == 49:
                    await asyncio.sleep(0.02)
            for _ in range(100):  # bounded wait for the answers
                if len(inbox.statuses) >= 400:
                    break
                await asyncio.sleep(0.02)
            assert client.endpoint.server_transactions <= 50
            assert inbox.statuses.count(503) >= 300, "past the cap: 503, not remembered"
        finally:
            sock.close()

    _run(scenario, "udp", trusted_peers=(TRUNK,), max_server_transactions=50)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
            return True
    except ConnectionError:
        return True  # reset: closed with our bytes unread
    except TimeoutError:
        return False


def test_a_huge_content_length_closes_the_connection() -> None:
    async def scenario(client: SipClient) -> None:
        reader, writer = await asyncio.open_connection(TRUNK, client.port)
        try:
            head = _request("OPTIONS", 1, TRUNK, 5060, "TCP").replace(
                b"Content-Length: 0", b"Content-Length: 100000000"
            )
            writer.write(head + b"x" * 1000)
            assert await _closed_within(reader, 2.0), "the connection stayed open"
        finally:
            writer.close()

    _run(scenario, "tcp", trusted_peers=(TRUNK,), max_content_length=64 * 1024)


def test_connections_past_the_cap_are_refused() -> None:
    async def scenario(client: SipClient) -> None:
        conns = [await asyncio.open_connection(TRUNK, client.port) for _ in range(4)]
        try:
            await asyncio.sleep(0.2)
            assert await _closed_within(conns[3][0], 1.0), "the 4th connection was kept"
            for reader, _ in conns[:3]:
                assert not await _closed_within(reader, 0.2)
        finally:
            for _, writer in conns:
                writer.close()

    _run(scenario, "tcp", trusted_peers=(TRUNK,), max_tcp_connections=3)


def test_an_idle_connection_is_closed_after_the_timeout() -> None:
    async def scenario(client: SipClient) -> None:
        reader, writer = await asyncio.open_connection(TRUNK, client.port)
        try:
            writer.write(b"\r\n\r\n")  # a keep-alive counts as activity
            assert not await _closed_within(reader, 0.2)
            assert await _closed_within(reader, 2.0), "the idle connection stayed open"
        finally:
            writer.close()

    _run(scenario, "tcp", trusted_peers=(TRUNK,), tcp_idle_timeout_s=0.4)


def test_a_strangers_invite_gets_nothing_and_leaves_no_state() -> None:
    async def scenario(client: SipClient) -> None:
        before = SIP_DROPS.snapshot().get("stranger", 0)
        sock, inbox = await _udp_peer(STRANGER)
        try:
            port = sock.get_extra_info("sockname")[1]
            for n in range(20):
                sock.sendto(_request("INVITE", n, STRANGER, port), (TRUNK, client.port))
            await asyncio.sleep(0.5)
            assert inbox.statuses == [], "a stranger got an answer"
            assert client.endpoint.server_transactions == 0, "a stranger created state"
            assert SIP_DROPS.snapshot().get("stranger", 0) - before >= 20
        finally:
            sock.close()

    _run(scenario, "udp")


def test_a_strangers_tcp_connection_is_closed() -> None:
    async def scenario(client: SipClient) -> None:
        reader, writer = await asyncio.open_connection(TRUNK, client.port, local_addr=(STRANGER, 0))
        try:
            writer.write(_request("INVITE", 1, STRANGER, 5060, "TCP"))
            assert await _closed_within(reader, 1.0), "a stranger's connection was kept"
            assert client.endpoint.server_transactions == 0
        finally:
            writer.close()

    _run(scenario, "tcp")


def test_a_bad_trusted_peer_setting_names_the_variable() -> None:
    try:
        Settings(sip_trusted_peers="10.0.0.0/8,not-an-address")
    except ValueError as exc:
        assert "CALLFLEET_SIP_TRUSTED_PEERS" in str(exc) and "not-an-address" in str(exc)
    else:
        raise AssertionError("a bad CIDR was accepted")
    settings = Settings(sip_trusted_peers=" 203.0.113.7, 198.51.100.0/24 ")
    assert settings.sip_trusted_peer_list == ("203.0.113.7", "198.51.100.0/24")
