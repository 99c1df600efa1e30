"""Webhook delivery against real HTTP receivers on 127.0.0.1, and the retry schedule.

The receivers are small asyncio servers that record each request. Names other than
`localhost` are answered by a stub resolver that only ever points at 127.0.0.x, so no test
sends a packet anywhere but the loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from callfleet.webhooks import (
    MAX_ATTEMPTS,
    RETRY_SCHEDULE,
    AttemptResult,
    deliver,
    new_client,
    new_secret,
    next_delay,
    verify,
)
from callfleet.webhooks.delivery import MAX_RESPONSE_BYTES

SECRET = new_secret()
BODY = b'{"call_id":"c_42","status":"completed"}'
Mode = Literal["respond", "stall", "endless"]


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that records requests and answers as configured."""

    status: int = 204
    reply_headers: dict[str, str] = field(default_factory=dict)
    mode: Mode = "respond"
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    bytes_sent: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while True:  # keep-alive unless the client asks to close
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, target, headers, body))
                close = headers.get("connection", "").lower() == "close"
                await self._reply(writer, close=close)
                if close or self.mode != "respond":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _reply(self, writer: asyncio.StreamWriter, *, close: bool) -> None:
        if self.mode == "stall":
            await asyncio.sleep(3600)
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.reply_headers.items())
        if self.mode == "endless":
            writer.write(f"HTTP/1.1 {self.status} X\r\n{extra}connection: close\r\n\r\n".encode())
            chunk = b"x" * 16384
            while self.bytes_sent < 50 * 1024 * 1024:
                writer.write(chunk)
                await writer.drain()
                self.bytes_sent += len(chunk)
            return
        payload = b"thanks"
        writer.write(
            f"HTTP/1.1 {self.status} X\r\n{extra}content-length: {len(payload)}\r\n"
            f"{'connection: close' if close else 'connection: keep-alive'}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def wrapper() -> None:
        await main()

    asyncio.run(wrapper())


def stub_resolver(names: dict[str, list[str]]) -> Counter[str]:
    """Make the running loop resolve `names` to the given addresses; other names as usual.

    Returns a counter of how often each stubbed name was looked up.
    """
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    lookups: Counter[str] = Counter()

    async def fake(host: Any, port: Any, **kwargs: Any) -> Any:
        if host in names:
            lookups[host] += 1
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))
                for address in names[host]
            ]
        return await real(host, port, **kwargs)

    loop.getaddrinfo = fake  # type: ignore[method-assign]
    return lookups


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def send(url: str, *, allow_private: bool = True, **kwargs: Any) -> AttemptResult:
    async with new_client() as client:
        return await deliver(
            client, url, SECRET, "msg_test_1", BODY, allow_private=allow_private, **kwargs
        )


# --- successful delivery ----------------------------------------------------------------


def test_delivery_is_signed_and_verifies_with_reference_library() -> None:
    async def main() -> None:
        async with Receiver(status=200) as receiver:
            result = await send(receiver.url)
        assert result.ok
        assert result.status_code == 200
        assert result.error is None
        assert not result.retryable
        assert result.duration_ms >= 0
        [request] = receiver.requests
        assert request.method == "POST"
        assert request.target == "/hook"
        assert request.body == BODY
        assert request.headers["webhook-id"] == "msg_test_1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "callfleet-webhooks/0.1"
        assert request.headers["connection"] == "close"
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
        assert Webhook(SECRET).verify(request.body, request.headers) == {
            "call_id": "c_42",
            "status": "completed",
        }
        verify(SECRET, request.headers, request.body)

    run(main)


def test_any_2xx_is_success() -> None:
    async def main() -> None:
        for status in (200, 201, 202, 204, 299):
            async with Receiver(status=status) as receiver:
                result = await send(receiver.url)
            assert (result.ok, result.status_code, result.retryable) == (True, status, False)

    run(main)


def test_hostname_is_pinned_to_checked_address_with_original_host_header() -> None:
    """A name is sent to the address that was checked, with its own Host header."""

    async def main() -> None:
        async with Receiver() as receiver:
            lookups = stub_resolver({"hooks.example": ["127.0.0.1"]})
            result = await send(f"http://hooks.example:{receiver.port}/hook?x=1")
        assert result.ok, result.error
        # Resolved once, by the guard; the connection went to the checked address.
        assert lookups == {"hooks.example": 1}
        [request] = receiver.requests
        assert request.headers["host"] == f"hooks.example:{receiver.port}"
        assert request.target == "/hook?x=1"

    run(main)


def test_next_address_is_tried_when_one_refuses() -> None:
    async def main() -> None:
        async with Receiver() as receiver:
            # Nothing listens on 127.0.0.2 at this port; the receiver is on 127.0.0.1.
            stub_resolver({"dual.example": ["127.0.0.2", "127.0.0.1"]})
            result = await send(f"http://dual.example:{receiver.port}/hook")
        assert result.ok, result.error
        assert len(receiver.requests) == 1

    run(main)


def test_pinned_connections_are_not_shared_between_hosts() -> None:
    async def main() -> None:
        async with Receiver() as receiver:
            stub_resolver({"a.example": ["127.0.0.1"], "b.example": ["127.0.0.1"]})
            async with new_client() as client:
                for host in ("a.example", "b.example", "a.example"):
                    result = await deliver(
                        client,
                        f"http://{host}:{receiver.port}/hook",
                        SECRET,
                        f"msg_{host}",
                        BODY,
                        allow_private=True,
                    )
                    assert result.ok, result.error
        hosts = [r.headers["host"].split(":")[0] for r in receiver.requests]
        assert hosts == ["a.example", "b.example", "a.example"]
        assert receiver.connections == 3

    run(main)


def _self_signed_localhost(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callfleet test receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        # Deliberately no IP SAN: the client must verify against the name, not 127.0.0.1.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert_pem


def test_https_pinning_keeps_server_name_for_sni_and_verification(tmp_path: Path) -> None:
    cert_path, key_path, cert_pem = _self_signed_localhost(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_path, key_path)
    seen_sni: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen_sni.append(name)

    server_tls.sni_callback = record_sni
    client_tls = ssl.create_default_context(cadata=cert_pem.decode())

    async def main() -> None:
        async with Receiver(tls=server_tls) as receiver:
            url = f"https://localhost:{receiver.port}/hook"
            async with httpx.AsyncClient(verify=client_tls, trust_env=False) as client:
                result = await deliver(client, url, SECRET, "msg_tls", BODY, allow_private=True)
        assert result.ok, result.error
        assert seen_sni == ["localhost"]
        [request] = receiver.requests
        assert request.headers["host"] == f"localhost:{receiver.port}"
        Webhook(SECRET).verify(request.body, request.headers)

    run(main)


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 404, 400, 410, 429])
def test_non_2xx_is_a_retryable_failure(status: int) -> None:
    async def main() -> None:
        async with Receiver(status=status) as receiver:
            result = await send(receiver.url)
        assert not result.ok
        assert result.status_code == status
        assert result.retryable
        assert result.error == f"HTTP {status}"
        assert len(receiver.requests) == 1

    run(main)


def test_redirect_is_not_followed() -> None:
    async def main() -> None:
        elsewhere = Receiver()
        first = Receiver(status=302)
        async with elsewhere, first:
            first.reply_headers["location"] = elsewhere.url
            result = await send(first.url)
        assert not result.ok
        assert result.status_code == 302
        assert result.retryable
        assert result.error is not None
        assert "not followed" in result.error
        assert elsewhere.url in result.error
        assert elsewhere.connections == 0

    run(main)


def test_connection_refused_is_a_retryable_error() -> None:
    async def main() -> None:
        result = await send(f"http://127.0.0.1:{free_port()}/hook")
        assert not result.ok
        assert result.status_code is None
        assert result.retryable
        assert result.error is not None
        assert "could not connect to 127.0.0.1" in result.error

    run(main)


def test_stalled_receiver_times_out() -> None:
    async def main() -> None:
        async with Receiver(mode="stall") as receiver:
            started = time.monotonic()
            result = await send(receiver.url, timeout_s=0.3)
            elapsed = time.monotonic() - started
        assert not result.ok
        assert result.status_code is None
        assert result.retryable
        assert result.error is not None
        assert "no complete response within 0.3 s" in result.error
        assert elapsed < 3
        assert len(receiver.requests) == 1

    run(main)


def test_endless_response_is_read_only_up_to_the_limit() -> None:
    async def main() -> None:
        async with Receiver(status=200, mode="endless") as receiver:
            result = await send(receiver.url, timeout_s=5)
            # The server notices the closed connection within a few writes.
            for _ in range(100):
                if not receiver._handlers:
                    break
                await asyncio.sleep(0.01)
        assert result.ok, result.error
        assert receiver.bytes_sent < 50 * 1024 * 1024
        assert result.duration_ms < 5000
        assert MAX_RESPONSE_BYTES == 64 * 1024

    run(main)


# --- the SSRF guard comes first ---------------------------------------------------------


def test_loopback_target_is_refused_without_connecting() -> None:
    touched: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        touched.append(request)
        return httpx.Response(200)

    async def main() -> None:
        async with Receiver() as receiver:
            real = await send(receiver.url, allow_private=False)
            async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
                mocked = await deliver(
                    client, receiver.url, SECRET, "msg_x", BODY, allow_private=False
                )
        for result in (real, mocked):
            assert not result.ok
            assert result.status_code is None
            assert not result.retryable
            assert result.error is not None
            assert "CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true" in result.error
        assert receiver.connections == 0
        assert touched == []

    run(main)


def test_metadata_target_is_refused_even_when_private_allowed() -> None:
    async def main() -> None:
        result = await send("http://169.254.169.254/latest/meta-data/", allow_private=True)
        assert not result.ok
        assert not result.retryable
        assert result.error is not None
        assert "metadata" in result.error

    run(main)


def test_malformed_url_is_not_retryable() -> None:
    async def main() -> None:
        result = await send("ftp://127.0.0.1/hook")
        assert (result.ok, result.retryable, result.status_code) == (False, False, None)

    run(main)


def test_unresolvable_host_is_retryable() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def no_such_host(*_: Any, **__: Any) -> Any:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        loop.getaddrinfo = no_such_host  # type: ignore[method-assign]
        result = await send("https://nowhere.invalid/hook", allow_private=False)
        assert (result.ok, result.retryable, result.status_code) == (False, True, None)
        assert result.error is not None
        assert "does not resolve" in result.error

    run(main)


def test_bad_secret_raises() -> None:
    async def main() -> None:
        async with new_client() as client:
            with pytest.raises(ValueError, match="secret"):
                await deliver(
                    client, "http://127.0.0.1:9/", "whsec_", "m", BODY, allow_private=True
                )

    run(main)


# --- retry schedule ---------------------------------------------------------------------


def test_schedule_follows_standard_webhooks_and_lasts_a_bit_over_a_day() -> None:
    assert RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert MAX_ATTEMPTS == 8
    assert 86_400 < sum(RETRY_SCHEDULE) < 2 * 86_400


def test_next_delay_is_the_schedule_with_ten_percent_jitter() -> None:
    rng = random.Random(7)
    for attempt, base in enumerate(RETRY_SCHEDULE, start=1):
        delay = next_delay(attempt, rng=rng)
        assert delay is not None
        assert base * 0.9 <= delay <= base * 1.1
    assert next_delay(len(RETRY_SCHEDULE) + 1) is None
    assert next_delay(100) is None


def test_next_delay_is_deterministic_with_a_seeded_rng() -> None:
    first = [next_delay(n, rng=random.Random(3)) for n in range(1, 9)]
    second = [next_delay(n, rng=random.Random(3)) for n in range(1, 9)]
    assert first == second


def test_next_delay_jitters_without_an_rng() -> None:
    assert len({next_delay(2) for _ in range(20)}) > 1


def test_next_delay_scale_shrinks_the_schedule() -> None:
    delay = next_delay(7, scale=0.001, rng=random.Random(1))
    assert delay is not None
    assert 36 * 0.9 <= delay <= 36 * 1.1


@pytest.mark.parametrize("attempt", [0, -1])
def test_next_delay_rejects_attempt_numbers_below_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        next_delay(attempt)


@given(
    attempt=st.integers(1, 20),
    scale=st.floats(0.0001, 10),
    seed=st.integers(0, 2**32),
)
def test_next_delay_bounds(attempt: int, scale: float, seed: int) -> None:
    delay = next_delay(attempt, scale=scale, rng=random.Random(seed))
    if attempt > len(RETRY_SCHEDULE):
        assert delay is None
    else:
        base = RETRY_SCHEDULE[attempt - 1] * scale
        assert delay is not None
        assert base * 0.9 - 1e-9 <= delay <= base * 1.1 + 1e-9


# --- the sender's manners: Retry-After and 410 Gone, against a real receiver and database ---


async def _one_pass(db: Any, tmp_path: Path, database_url: str, receiver: Any) -> Any:
    from callfleet.clock import utcnow
    from callfleet.config import Settings
    from callfleet.store.accounts import create_account
    from callfleet.store.tables import webhook_deliveries
    from callfleet.webhooks.outbox import enqueue_delivery
    from callfleet.webhooks.sender import WebhookSender

    settings = Settings(data_dir=tmp_path, database_url=database_url, webhook_allow_private=True)
    with db.write() as conn:
        account = create_account(conn, "hooks")
        delivery_id = enqueue_delivery(
            conn,
            account_id=account.id,
            event="call.completed",
            url=receiver.url,
            payload={"call_id": "c_1"},
            call_id=None,
            batch_id=None,
            now=utcnow(),
        )

    def load() -> Any:
        with db.read() as conn:
            query = webhook_deliveries.select().where(webhook_deliveries.c.id == delivery_id)
            return conn.execute(query).one()

    sender = WebhookSender(db, settings)
    started = utcnow()
    await sender.start()  # its loop sends the due delivery at once
    try:
        deadline = time.monotonic() + 10
        while (row := load()).attempts == 0:
            assert time.monotonic() < deadline, "the sender made no attempt within 10 s"
            await asyncio.sleep(0.02)
    finally:
        await sender.stop()
    return row, started


@pytest.mark.parametrize(
    ("retry_after", "expected_s"),
    [("120", 120.0), ("http-date", 600.0), ("99999999", float(max(RETRY_SCHEDULE)))],
)
def test_retry_after_sets_the_next_attempt_bounded_by_the_schedule(
    db: Any, tmp_path: Path, database_url: str, retry_after: str, expected_s: float
) -> None:
    from email.utils import format_datetime

    if retry_after == "http-date":
        at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=600)
        retry_after = format_datetime(at, usegmt=True)

    async def main() -> Any:
        async with Receiver(status=503, reply_headers={"retry-after": retry_after}) as receiver:
            result = await _one_pass(db, tmp_path, database_url, receiver)
            assert len(receiver.requests) == 1
            return result

    row, started = asyncio.run(main())
    assert row.state == "pending" and row.attempts == 1
    waited = (row.next_attempt_at.replace(tzinfo=datetime.UTC) - started).total_seconds()
    assert expected_s - 5 <= waited <= expected_s + 5, waited


def test_410_gone_stops_retrying_the_delivery(db: Any, tmp_path: Path, database_url: str) -> None:
    async def main() -> Any:
        async with Receiver(status=410) as receiver:
            result = await _one_pass(db, tmp_path, database_url, receiver)
            assert len(receiver.requests) == 1
            return result

    row, _started = asyncio.run(main())
    assert row.state == "failed"
    assert row.next_attempt_at is None
    assert row.last_status_code == 410
    assert "410" in row.last_error and "gone" in row.last_error.lower()


def test_a_failed_attempt_is_logged_without_the_urls_query_string(
    db: Any, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> Any:
        async with Receiver(status=503) as receiver:
            return await _one_pass(db, tmp_path, database_url, _WithQuery(receiver))

    asyncio.run(main())
    logged = capsys.readouterr()
    assert "webhook attempt failed" in logged.out + logged.err
    assert "hook-token" not in logged.out + logged.err


@dataclass
class _WithQuery:
    """A receiver's URL with a token in its query string."""

    receiver: Receiver

    @property
    def url(self) -> str:
        return self.receiver.url + "?token=hook-token"
