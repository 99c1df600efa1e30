"""A trunk is not an open door: what a tenant's trunk may say and where it may dial.

Every test goes through a real interface: the HTTP API of the real app, or the
SIP carrier sending to a real UDP listener on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from callfleet.clock import utcnow
from callfleet.store.accounts import create_account, create_key
from callfleet.store.ids import new_id
from callfleet.store.trunks import NewTrunk, add_trunk
from callfleet.telephony.carrier import DialRequest, DialResult, Outcome, TrunkTarget
from callfleet.telephony.sip import parse_message
from callfleet.telephony.sip.message import SipRequest, build_response
from callfleet.telephony.sip_carrier import SipCarrier
from conftest import Server, wait_for

# The audit's probe: a header value that carries a Redis command on its own line.
INJECTED = "example.net\r\nSET pwned 1\r\nX-Tail: x"


class Listener:
    """A UDP socket on loopback that records every datagram it receives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port = int(sock.getsockname()[1])

    def received(self, wait_s: float = 0.5) -> list[bytes]:
        datagrams: list[bytes] = []
        deadline = time.monotonic() + wait_s
        while len(datagrams) < 100 and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                datagrams.append(self.sock.recv(65535))
            except TimeoutError:
                break
        return datagrams


@contextmanager
def udp_listener() -> Iterator[Listener]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield Listener(sock)


def dial(carrier: SipCarrier, trunk: TrunkTarget, *, limit_s: float = 3.0) -> DialResult | None:
    """Place one call on `carrier`; None if it did not end within `limit_s`."""

    async def scenario() -> DialResult | None:
        request = DialRequest(
            call_id="probe", attempt=1, to_number="+15550100", from_number="+15550199", trunk=trunk
        )

        class Events:
            async def ringing(self) -> None: ...

            async def answered(self) -> None: ...

        try:
            async with asyncio.timeout(limit_s):
                return await carrier.place_call(request, Events())
        except TimeoutError:
            return None
        finally:
            await carrier.close()

    return asyncio.run(scenario())


def test_a_crlf_header_value_never_reaches_the_wire() -> None:
    with udp_listener() as peer:
        trunk = TrunkTarget("127.0.0.1", peer.port, from_domain=INJECTED)
        result = dial(SipCarrier(), trunk)
        datagrams = peer.received()
    assert not any(b"SET pwned" in d for d in datagrams), datagrams
    assert datagrams == []
    assert result is not None and result.outcome is Outcome.FAILED
    assert result.error_message is not None and "CR or LF" in result.error_message


GOOD_TRUNK: dict[str, Any] = {
    "name": "carrier",
    "host": "sip.example.net",
    "username": "acme",
    "password": "pw",
    "from_domain": "example.net",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", "x.example\r\nSET pwned 1"),
        ("host", "127.0.0.1:6379"),
        ("host", "sip.example.net/path"),
        ("host", "sip example.net"),
        ("host", "-bad-.example"),
        ("from_domain", INJECTED),
        ("from_domain", "x.example\nX-Injected: yes"),
        ("from_domain", "1.2.3.4:5060"),
        ("from_domain", "<sip:a@b>"),
        ("username", 'acme"\r\nSET pwned 1'),
        ("username", "acme\r\nX-Injected: yes"),
        ("username", 'ac"me'),
        ("username", "ac\\me"),
        ("username", "ac\x00me"),
        ("password", "pw\r\nSET pwned 1"),
        ("password", 'p"w'),
        ("password", "p\\w"),
        ("password", "p\x00w"),
    ],
)
def test_a_trunk_field_that_would_break_a_sip_header_is_refused(
    server: Server, field: str, value: str
) -> None:
    with server.client(server.new_key()) as client:
        resp = client.post("/v1/trunks", json=GOOD_TRUNK | {field: value})
        assert resp.status_code == 400, resp.text
        body = resp.json()
        assert [e["field"] for e in body["errors"]] == [field]
        assert "Traceback" not in resp.text
        assert field in body["message"]
        assert client.get("/v1/trunks").json()["trunks"] == []


@pytest.mark.parametrize(
    "host",
    ["sip.example.net", "SIP.Example.NET.", "8.8.8.8", "2606:4700::1111", "[2606:4700::1111]"],
)
def test_host_names_and_ip_literals_are_accepted(server: Server, host: str) -> None:
    with server.client(server.new_key()) as client:
        resp = client.post("/v1/trunks", json=GOOD_TRUNK | {"host": host})
    assert resp.status_code == 200, resp.text
    assert resp.json()["trunk"]["host"] == host


# --- where a trunk may send calls -------------------------------------------------------

CLOSED = {"trunk_allow_private": False, "trunk_allow": ""}
"""The default policy (the test suite's configuration opens loopback for SIP peers)."""
REFUSED_AT_DIAL = (
    "the trunk's host is not an allowed call destination; see the operator's address policy"
)
ALWAYS = {"start": "00:00", "end": "24:00"}


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "10.0.0.5", "100.64.0.1", "169.254.169.254", "fd00::1"]
)
def test_a_trunk_into_the_operators_network_is_refused_at_creation(
    server_factory: Any, host: str
) -> None:
    server: Server = server_factory(sip=True, **CLOSED)
    with udp_listener() as peer, server.client(server.new_key()) as client:
        resp = client.post("/v1/trunks", json={"name": "t", "host": host, "port": peer.port})
        assert resp.status_code == 400, resp.text
        assert [e["field"] for e in resp.json()["errors"]] == ["host"]
        assert "CALLFLEET_TRUNK_ALLOW_PRIVATE" in resp.text
        assert client.get("/v1/trunks").json()["trunks"] == []
        assert peer.received(0.2) == []


@pytest.mark.parametrize(
    ("settings", "host", "allowed"),
    [
        ({"trunk_allow_private": True, "trunk_allow": ""}, "127.0.0.1", True),
        ({"trunk_allow_private": True, "trunk_allow": ""}, "localhost", True),
        ({"trunk_allow_private": True, "trunk_allow": ""}, "10.0.0.5", True),
        ({"trunk_allow_private": True, "trunk_allow": ""}, "169.254.169.254", False),
        ({"trunk_allow_private": True, "trunk_allow": ""}, "169.254.10.1", False),
        ({"trunk_allow_private": True, "trunk_allow": ""}, "168.63.129.16", False),
        ({"trunk_allow_private": True, "trunk_allow": ""}, "192.0.0.192", False),
        ({"trunk_allow_private": False, "trunk_allow": "127.0.0.1/32"}, "localhost", True),
        ({"trunk_allow_private": False, "trunk_allow": "10.0.0.0/8,127.0.0.0/8"}, "10.9.9.9", True),
        ({"trunk_allow_private": False, "trunk_allow": "10.0.0.0/8"}, "127.0.0.1", False),
        ({"trunk_allow_private": False, "trunk_allow": "169.254.0.0/16"}, "169.254.169.254", False),
    ],
)
def test_the_operator_opens_private_targets_by_setting_or_cidr(
    server_factory: Any, settings: dict[str, Any], host: str, allowed: bool
) -> None:
    server: Server = server_factory(sip=True, **settings)
    with server.client(server.new_key()) as client:
        resp = client.post("/v1/trunks", json={"name": "t", "host": host, "port": 5060})
    assert resp.status_code == (200 if allowed else 400), resp.text
    if not allowed:
        assert [e["field"] for e in resp.json()["errors"]] == ["host"]


def _stored_trunk_call(server: Server, host: str, port: int) -> str:
    """A trunk stored under an older, looser policy (or whose DNS answer has since
    changed), a number on it and one call through it; returns the call's id."""
    with server.db.write() as conn:
        account = create_account(conn, "tenant")
        key = create_key(conn, account.id, "tenant")
        trunk = NewTrunk(new_id(), "old", host, port, "udp", None, None, None, 100.0, True)
        add_trunk(conn, account.id, trunk, utcnow())
    with server.client(key) as client:
        client.post(
            "/v1/numbers", json={"phone_number": "+12125550100", "trunk_id": trunk.id}
        ).raise_for_status()
        resp = client.post(
            "/v1/calls",
            json={
                "phone_number": "+14155550123",
                "from": "+12125550100",
                "task": "Hi",
                "calling_window": ALWAYS,
            },
        )
        assert resp.status_code == 200, resp.text
        call_id: str = resp.json()["call_id"]

        def ended() -> dict[str, Any] | None:
            call: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
            return call if call["completed"] else None

        call = wait_for(ended, timeout=20)
    assert call["status"] == "failed", call
    assert call["error_message"] == REFUSED_AT_DIAL, call
    return call_id


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_stored_trunk_that_now_reaches_a_private_address_is_refused_at_dial(
    server_factory: Any, host: str
) -> None:
    """127.0.0.1: the operator closed the policy after the trunk was added; localhost: a
    name whose DNS answer is now a loopback address. Nothing reaches the listener, and an
    open port reads the same as a closed one."""
    server: Server = server_factory(sip=True, **CLOSED)
    with udp_listener() as peer:
        _stored_trunk_call(server, host, peer.port)
        assert peer.received(0.2) == []
    with udp_listener() as closed:
        port = closed.port  # closed once the listener is gone
    _stored_trunk_call(server, host, port)


def test_an_allowed_cidr_lets_the_dial_reach_the_peer(server_factory: Any) -> None:
    server: Server = server_factory(sip=True, trunk_allow_private=False, trunk_allow="127.0.0.1/32")
    with udp_listener() as peer, server.client(server.new_key()) as client:
        trunk = client.post(
            "/v1/trunks", json={"name": "t", "host": "localhost", "port": peer.port}
        )
        assert trunk.status_code == 200, trunk.text
        client.post(
            "/v1/numbers",
            json={
                "phone_number": "+12125550100",
                "trunk_id": trunk.json()["trunk"]["trunk_id"],
            },
        ).raise_for_status()
        resp = client.post(
            "/v1/calls",
            json={
                "phone_number": "+14155550123",
                "from": "+12125550100",
                "task": "Hi",
                "calling_window": ALWAYS,
            },
        )
        assert resp.status_code == 200, resp.text
        datagrams = peer.received(10.0)
        client.post(f"/v1/calls/{resp.json()['call_id']}/stop")
    assert datagrams and datagrams[0].startswith(b"INVITE sip:+14155550123@localhost:")


class AnsweringTrunk:
    """A SIP trunk on loopback UDP that answers every INVITE at once with `sdp`, ACKs
    nothing back and answers a BYE with 200: just enough of a peer to set up a call."""

    def __init__(self, sdp: bytes) -> None:
        self.sdp = sdp
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.methods: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> AnsweringTrunk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            message = parse_message(data)
            if not isinstance(message, SipRequest):
                continue
            self.methods.append(message.method)
            if message.method == "INVITE":
                reply = build_response(
                    message,
                    200,
                    "OK",
                    to_tag="trunk1",
                    headers=[
                        ("Contact", f"<sip:trunk@127.0.0.1:{self.port}>"),
                        ("Content-Type", "application/sdp"),
                    ],
                    body=self.sdp,
                )
            elif message.method in ("BYE", "CANCEL", "OPTIONS"):
                reply = build_response(message, 200, "OK")
            else:
                continue
            self.sock.sendto(reply.to_bytes(), source)


def _media_sdp(host: str, port: int) -> bytes:
    return (
        f"v=0\r\no=trunk 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def test_a_trunk_cannot_point_our_media_into_the_operators_network(
    server_factory: Any,
) -> None:
    """The trunk itself is allowed (127.0.0.1/32), but its answer's SDP sends our RTP
    to 127.0.0.2, which the policy does not open: not one packet goes there, and the
    call ends at once saying why (before, 50 packets a second went wherever the
    tenant's trunk said, any host and port the server could reach)."""
    server: Server = server_factory(sip=True, trunk_allow_private=False, trunk_allow="127.0.0.1/32")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
        server.client(server.new_key()) as client,
    ):
        target.bind(("127.0.0.2", 0))
        victim = Listener(target)
        with AnsweringTrunk(_media_sdp("127.0.0.2", victim.port)) as trunk:
            made = client.post(
                "/v1/trunks", json={"name": "t", "host": "127.0.0.1", "port": trunk.port}
            )
            assert made.status_code == 200, made.text
            client.post(
                "/v1/numbers",
                json={
                    "phone_number": "+12125550100",
                    "trunk_id": made.json()["trunk"]["trunk_id"],
                },
            ).raise_for_status()
            resp = client.post(
                "/v1/calls",
                json={
                    "phone_number": "+14155550123",
                    "from": "+12125550100",
                    "task": "Hi",
                    "calling_window": ALWAYS,
                },
            )
            assert resp.status_code == 200, resp.text
            call_id = resp.json()["call_id"]
            try:
                datagrams = victim.received(1.5)

                def ended() -> dict[str, Any] | None:
                    call: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
                    return call if call["completed"] else None

                call = wait_for(ended, timeout=20)
            finally:
                client.post(f"/v1/calls/{call_id}/stop")
            assert "INVITE" in trunk.methods and "BYE" in trunk.methods, trunk.methods
    assert datagrams == [], f"{len(datagrams)} packets reached the refused address"
    assert "media refused: the SDP names 127.0.0.2" in (call["error_message"] or ""), call
