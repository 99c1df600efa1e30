"""`PhoneSimulator`: a SIP server (UAS) on loopback whose numbers behave like phones.

`PhoneSimulator` listens on UDP (or TCP) and is dialled like any SIP trunk. The
user part of the Request-URI picks the phone (`+1 NPA 555-01XX`, with or without
the `+`), and `callfleet.simulator.rules.persona_for` says what it does, with every
wait multiplied by `time_scale`:

| behaviour   | what the caller gets                                                     |
| ----------- | ------------------------------------------------------------------------ |
| human       | 100, 180 for ring_s, 200 + SDP; a spoken greeting, then it answers each  |
|             | of the caller's turns with a line of its script (`voices.Conversation`); |
|             | our BYE after talk_s unless the caller hangs up first, but never in the  |
|             | middle of a line or a conversation: not before the caller has had 4 s to |
|             | answer, and once they talk, not before the script is said and they have  |
|             | been quiet for 4 s (within talk_s of real time)                          |
| voicemail   | 180 for ring_s, 200; a spoken greeting, a 1 kHz beep (or none), then it  |
|             | records what it hears until the caller hangs up (at most 120 s, scaled)  |
| busy        | 100, then 486 after ring_s                                               |
| no-answer   | 180 until the caller CANCELs (200, then 487); 480 after `max_ring_s`     |
| decline     | 180, then 603 after ring_s                                               |
| unreachable | 100, then 502 Bad Gateway after ring_s                                   |
| unknown     | 404                                                                      |

The people speak real words (Piper, `callfleet.simulator.voices`), rendered
while the phone rings and never time-scaled. A person's call measures the caller's
response latency after each of its lines (`SimulatedCall.latencies_ms`) and, for
the barge-in numbers, how fast the caller stops talking when talked over
(`barge_in_stop_ms`). With `record_dir` set, what the caller sent is written as a
WAV: the whole call for a person, what followed the beep (or the greeting) for a
voicemail box. A REFER on an answered call gets 202 and a NOTIFY with a 200
sipfrag; the target lands in `transferred_to`, and our BYE follows 2 s later unless
the caller hangs up first.

`time_scale=0` is the fast mode for load tests: nothing rings; answering phones
answer at once, hold `fast_hold_s` without sending RTP and hang up (no speech, no
listening); the others give their final response at once (no-answer still rings
until CANCEL).

The UAS side follows RFC 3261: a retransmitted request gets the last response
again (and a retransmitted INVITE is recorded as such); non-2xx finals are
retransmitted until their ACK (Timers G/H), 2xx until theirs (§13.3.1.4, BYE if it
never comes); CANCEL gets 200 and the INVITE 487; BYE, OPTIONS, INFO and UPDATE
get 200, REFER 202, re-INVITEs an SDP answer (or our current SDP as an offer),
requests for unknown dialogs 481. With `username`/`password` set, INVITEs are
challenged with a 407 digest (MD5, qop=auth). Unparseable datagrams are dropped by
the transport.

Every INVITE received is appended to `invites` (the ground truth that no number was
dialled twice for one attempt), every call to `calls`, and `max_concurrent_seen`
keeps the high-water mark of live calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any

import structlog

from callfleet import synth as audio
from callfleet.clock import utcnow
from callfleet.simulator import script, voices
from callfleet.simulator.config import SimulatorConfig
from callfleet.simulator.records import InviteRecord, SimulatedCall, normalise_number
from callfleet.simulator.rules import persona_for
from callfleet.simulator.session import ALLOW, SERVER, CallSession
from callfleet.simulator.transactions import ServerTransaction
from callfleet.telephony.carrier import TrunkTarget
from callfleet.telephony.sip.auth import (
    Challenge,
    Credentials,
    build_authorization,
    parse_digest_fields,
)
from callfleet.telephony.sip.endpoint import new_tag
from callfleet.telephony.sip.errors import SipError, SipParseError, TransportError
from callfleet.telephony.sip.host import capability_headers, contact_value, via_value
from callfleet.telephony.sip.message import SipMessage, SipRequest, SipResponse, build_response
from callfleet.telephony.sip.transaction import NonInviteClientTransaction
from callfleet.telephony.sip.transport import Address, SipTransport, TcpTransport, UdpTransport
from callfleet.telephony.sip.uri import parse_uri, parse_via

__all__ = ["PhoneSimulator"]

log = structlog.get_logger(__name__)

_IN_DIALOG_ONLY = ("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER")
_NOT_ALLOWED = ("REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH")

_ServerTx = ServerTransaction[CallSession]


def _with_received(via_text: str, source: Address) -> str:
    """RFC 3581/3261 §18.2.1: fill `rport` and add `received` to the top Via."""
    try:
        via = parse_via(via_text)
    except SipParseError:
        return via_text
    if "rport" in via.params and via.params["rport"] is None:
        via.params["rport"] = str(source[1])
        via.params["received"] = source[0]
    elif via.host.strip("[]") != source[0]:
        via.params["received"] = source[0]
    else:
        return via_text
    return str(via)


class PhoneSimulator:
    """The phone farm: `await start()`, dial `address` as a trunk, `await close()`."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.invites: list[InviteRecord] = []
        self.calls: dict[str, SimulatedCall] = {}
        """Every call that got past authentication and capacity checks, by Call-ID."""
        self.max_concurrent_seen = 0
        self.rejected_over_capacity = 0
        self._transport: SipTransport | None = None
        self._server_txs: dict[tuple[str, str, str], _ServerTx] = {}
        self._clients: dict[tuple[str, str], NonInviteClientTransaction] = {}
        self._dialogs: dict[tuple[str, str], CallSession] = {}
        self._live: set[CallSession] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._nonces: dict[str, None] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._transport is not None:
            return
        cfg = self.config
        await asyncio.to_thread(self._warm_up)
        if cfg.transport.lower() == "tcp":
            self._transport = await TcpTransport.open(cfg.host, cfg.port, self._received)
        else:
            self._transport = await UdpTransport.open(cfg.host, cfg.port, self._received)
        log.info("phone_simulator_listening", at=self.describe())

    def _warm_up(self) -> None:
        """Make the beep now, point the voices' cache at its directory, and say at
        start (not mid-call) if the people cannot speak with Piper."""
        audio.beep(self.config.beep_s)
        if self.config.voice_cache_dir is not None:
            voices.use_cache_dir(self.config.voice_cache_dir)
        voices.engine()

    async def close(self) -> None:
        for session in list(self._live):
            session.abort()
        for client in list(self._clients.values()):
            client.terminate()
        self._clients.clear()
        for tx in self._server_txs.values():
            tx.cancel_timers()
        self._server_txs.clear()
        await asyncio.sleep(0)  # let aborted calls schedule their RTP close
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def __aenter__(self) -> PhoneSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- identity ------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (host, port)."""
        if self._transport is None:
            raise RuntimeError("the phone simulator is not started")
        return self._transport.local_host, self._transport.local_port

    @property
    def media_host(self) -> str:
        return self.config.advertised_host or self.address[0]

    @property
    def reliable(self) -> bool:
        return self._transport is not None and self._transport.reliable

    def describe(self) -> str:
        host, port = self.address
        return (
            f"phone simulator sip:{host}:{port};transport={self.config.transport.lower()} "
            f"(test numbers +1 NPA 555-01XX; time scale {self.config.time_scale:g})"
        )

    def trunk(self) -> TrunkTarget:
        """A `TrunkTarget` that dials this simulator (with its credentials, if any)."""
        host, port = self.address
        cfg = self.config
        return TrunkTarget(
            host, port, cfg.transport.lower(), username=cfg.username, password=cfg.password
        )

    @property
    def _transport_name(self) -> str:
        return self._transport.name if self._transport is not None else "UDP"

    def via(self) -> str:
        return via_value(self._transport_name, self.media_host, self.address[1])

    def contact(self, user: str) -> str:
        return contact_value(user, self.media_host, self.address[1], self._transport_name)

    def capabilities(self) -> list[tuple[str, str]]:
        return capability_headers(ALLOW, timer=False)

    # -- what happened -------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._live)

    def calls_by_number(self) -> dict[str, list[str]]:
        """Number -> the distinct Call-IDs of the new (not in-dialog) INVITEs it received."""
        out: dict[str, list[str]] = {}
        for record in self.invites:
            if record.in_dialog:
                continue
            ids = out.setdefault(record.to_number, [])
            if record.call_id not in ids:
                ids.append(record.call_id)
        return out

    async def wait_idle(self, timeout_s: float | None = None) -> None:
        """Until no call is live (raises TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

    # -- sending -------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def send(self, message: SipMessage, dest: Address) -> None:
        if self._transport is None:
            return
        try:
            self._transport.send(message, dest)
        except TransportError as exc:
            log.info("simulator_cannot_send", message=repr(message), dest=dest, error=str(exc))

    async def send_request(self, request: SipRequest, dest: Address) -> SipResponse:
        transport = self._transport
        if transport is None:
            raise TransportError("the phone simulator is closed")

        def send(message: SipMessage) -> None:
            transport.send(message, dest)

        def forget(tx: object) -> None:
            if isinstance(tx, NonInviteClientTransaction) and self._clients.get(tx.key) is tx:
                del self._clients[tx.key]

        tx = NonInviteClientTransaction(
            request,
            send,
            reliable=transport.reliable,
            timers=self.config.timers,
            on_terminated=forget,
        )
        self._clients[tx.key] = tx
        tx.start()
        return await tx.result()

    def reply(
        self,
        tx: _ServerTx,
        status: int,
        reason: str,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        """Answer a server transaction; finals are kept for retransmitted requests."""
        request = tx.request
        tag = to_tag or new_tag()
        vias = request.headers.values("Via")
        response = build_response(
            request,
            status,
            reason,
            to_tag=tag,
            headers=[("Server", SERVER), *headers],
            body=body,
            vias=[_with_received(vias[0], tx.source), *vias[1:]],
        )
        tx.response = response
        self.send(response, tx.source)
        if status < 200 or tx.final:
            return response
        tx.final = True
        loop = asyncio.get_running_loop()
        timers = self.config.timers
        if request.method == "INVITE" and status >= 300:
            if not self.reliable:
                self._timer_g(tx, timers.t1)
            tx.handles.append(loop.call_later(timers.give_up, self._forget, tx))  # Timer H
        else:
            tx.handles.append(loop.call_later(timers.give_up, self._forget, tx))  # Timer J
        return response

    def _timer_g(self, tx: _ServerTx, interval: float) -> None:
        def resend() -> None:
            if tx.response is None or self._server_txs.get(tx.key) is not tx:
                return
            self.send(tx.response, tx.source)
            self._timer_g(tx, min(2 * interval, self.config.timers.t2))

        tx.handles.append(asyncio.get_running_loop().call_later(interval, resend))

    def _forget(self, tx: _ServerTx) -> None:
        tx.cancel_timers()
        if self._server_txs.get(tx.key) is tx:
            del self._server_txs[tx.key]

    # -- receiving -----------------------------------------------------------------

    def _received(self, message: SipMessage, source: Address) -> None:
        try:
            if isinstance(message, SipResponse):
                key = (message.top_via.branch or "", message.cseq[1])
                client = self._clients.get(key)
                if client is not None:
                    client.receive(message)
            else:
                self._on_request(message, source)
        except Exception:
            log.exception("simulator_request_failed", message=repr(message), source=source)

    def _on_request(self, request: SipRequest, source: Address) -> None:
        branch = request.top_via.branch or f"rfc2543:{request.cseq[0]}:{request.from_addr.tag}"
        if request.method == "ACK":
            self._on_ack(request, branch)
            return
        key = (branch, request.method, request.call_id)
        tx = self._server_txs.get(key)
        if tx is not None:  # a retransmission: the last response again
            if request.method == "INVITE":
                self._record(tx, request, source, retransmission=True)
            if tx.response is not None:
                self.send(tx.response, tx.source)
            return
        tx = _ServerTx(key, request, source)
        self._server_txs[key] = tx
        try:
            if request.method == "INVITE":
                self._on_invite(tx)
            elif request.method == "CANCEL":
                self._on_cancel(tx)
            else:
                self._on_other(tx)
        finally:
            if tx.response is None:  # a bug or an unreadable header: still answer
                self.reply(tx, 500, "Server Internal Error")

    def _record(
        self, tx: _ServerTx, request: SipRequest, source: Address, *, retransmission: bool
    ) -> None:
        record = InviteRecord(
            to_number=tx.number,
            call_id=request.call_id,
            cseq=request.cseq[0],
            branch=request.top_via.branch or "",
            received_at=utcnow(),
            is_retransmission=retransmission,
            in_dialog=tx.in_dialog,
            challenged=tx.challenged,
            source=source,
            callfleet_call=request.headers.get("X-Callfleet-Call"),
        )
        self.invites.append(record)

    def _find_dialog(self, request: SipRequest) -> CallSession | None:
        session = self._dialogs.get((request.call_id, request.to_addr.tag or ""))
        if session is not None and session.dialog.matches(request):
            return session
        return None

    def _on_invite(self, tx: _ServerTx) -> None:
        request, source = tx.request, tx.source
        try:
            uri = parse_uri(request.uri)
        except SipParseError:
            uri = None
        tx.number = normalise_number(uri.user or "") if uri is not None else request.uri
        if request.to_addr.tag is not None:
            tx.in_dialog = True
            self._record(tx, request, source, retransmission=False)
            session = self._find_dialog(request)
            if session is None:
                self.reply(tx, 481, "Call/Transaction Does Not Exist")
            else:
                session.on_request(tx)
            return
        tx.challenged = not self._authorised(request)
        self._record(tx, request, source, retransmission=False)
        if uri is None:
            self.reply(tx, 416, "Unsupported URI Scheme")
        elif tx.challenged:
            self._challenge(tx)
        elif request.call_id in self.calls and self.calls[request.call_id].ended_at is None:
            self.reply(tx, 482, "Loop Detected")
        elif self.config.max_concurrent is not None and (
            len(self._live) >= self.config.max_concurrent
        ):
            self.rejected_over_capacity += 1
            retry = str(self.config.overload_retry_after_s)
            self.reply(tx, 503, "Service Unavailable", headers=[("Retry-After", retry)])
        else:
            self._new_call(tx)

    def _new_call(self, tx: _ServerTx) -> None:
        persona = persona_for(tx.number)
        record = SimulatedCall(tx.request.call_id, tx.number, persona.behaviour, utcnow())
        try:
            session = CallSession(self, tx, record, persona)
        except SipParseError as exc:
            self.reply(tx, 400, f"Bad Request ({exc})"[:100])
            return
        self.calls[record.call_id] = record
        self._dialogs[(record.call_id, session.local_tag)] = session
        self._live.add(session)
        self._idle.clear()
        self.max_concurrent_seen = max(self.max_concurrent_seen, len(self._live))
        tx.session = session
        script.start(session)

    def session_ended(self, session: CallSession) -> None:
        self._live.discard(session)
        key = (session.record.call_id, session.local_tag)
        if self._dialogs.get(key) is session:
            del self._dialogs[key]
        if not self._live:
            self._idle.set()

    def _on_ack(self, request: SipRequest, branch: str) -> None:
        tx = self._server_txs.get((branch, "INVITE", request.call_id))
        if tx is not None and tx.response is not None and tx.response.status >= 300:
            if not tx.confirmed:  # Completed -> Confirmed: stop Timers G and H, linger T4
                tx.confirmed = True
                tx.cancel_timers()
                delay = 0.0 if self.reliable else self.config.timers.t4
                tx.handles.append(asyncio.get_running_loop().call_later(delay, self._forget, tx))
                if tx.session is not None:
                    tx.session.record.requests.append("ACK")
            return
        session = self._find_dialog(request)
        if session is not None:
            session.on_ack(request)

    def _on_cancel(self, tx: _ServerTx) -> None:
        branch, _, call_id = tx.key
        invite = self._server_txs.get((branch, "INVITE", call_id))
        if invite is None:
            self.reply(tx, 481, "Call/Transaction Does Not Exist")
            return
        session = invite.session
        self.reply(tx, 200, "OK", to_tag=session.local_tag if session is not None else None)
        if session is not None and not invite.final:
            session.cancelled(tx.request)

    def _on_other(self, tx: _ServerTx) -> None:
        request = tx.request
        method = request.method
        if request.to_addr.tag is None:
            if method == "OPTIONS":
                self.reply(tx, 200, "OK", headers=self.capabilities())
            elif method in _IN_DIALOG_ONLY:
                self.reply(tx, 481, "Call/Transaction Does Not Exist")
            elif method in _NOT_ALLOWED:
                self.reply(tx, 405, "Method Not Allowed", headers=[("Allow", ALLOW)])
            else:
                self.reply(tx, 501, "Not Implemented", headers=[("Allow", ALLOW)])
            return
        session = self._find_dialog(request)
        if session is None:
            self.reply(tx, 481, "Call/Transaction Does Not Exist")
        else:
            session.on_request(tx)

    # -- digest authentication -----------------------------------------------------

    def _authorised(self, request: SipRequest) -> bool:
        cfg = self.config
        if cfg.username is None or cfg.password is None:
            return True
        credentials = Credentials(cfg.username, cfg.password)
        for value in request.headers.get_all("Proxy-Authorization"):
            got = parse_digest_fields(value)
            nonce = got.get("nonce", "")
            if got.get("username") != cfg.username or got.get("realm") != cfg.realm:
                continue
            if nonce not in self._nonces:
                continue
            qop = got.get("qop")
            challenge = Challenge(
                cfg.realm,
                nonce,
                algorithm=got.get("algorithm", "MD5"),
                qop=(qop,) if qop else (),
                opaque=got.get("opaque"),
            )
            try:
                expected = build_authorization(
                    challenge,
                    credentials,
                    method=request.method,
                    uri=got.get("uri", ""),
                    body=request.body,
                    nonce_count=int(got.get("nc", "1"), 16),
                    cnonce=got.get("cnonce"),
                )
            except (KeyError, ValueError, SipError):
                continue
            want = parse_digest_fields(expected).get("response", "")
            if hmac.compare_digest(want, got.get("response", "")):
                return True
        return False

    def _challenge(self, tx: _ServerTx) -> None:
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = None
        while len(self._nonces) > 10_000:
            del self._nonces[next(iter(self._nonces))]
        value = f'Digest realm="{self.config.realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
        challenge = [("Proxy-Authenticate", value)]
        self.reply(tx, 407, "Proxy Authentication Required", headers=challenge)
