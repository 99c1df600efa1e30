"""A simulated carrier on loopback: a SIP server (UAS) whose numbers behave like phones.

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

The people speak real words (espeak-ng, `callfleet.simulator.voices`), rendered
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
import dataclasses
import hmac
import logging
import re
import secrets
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from callfleet.simulator import audio, voices
from callfleet.simulator.rules import Behaviour, Persona, persona_for
from callfleet.telephony.carrier import CallEvents, DialRequest, DialResult, TrunkTarget
from callfleet.telephony.rtp.session import RtpSession
from callfleet.telephony.sip.auth import Challenge, Credentials, build_authorization
from callfleet.telephony.sip.carrier import SipCarrier
from callfleet.telephony.sip.dialog import Dialog
from callfleet.telephony.sip.endpoint import new_branch, new_tag
from callfleet.telephony.sip.errors import SdpError, SipError, SipParseError, TransportError
from callfleet.telephony.sip.media import LocalSdp
from callfleet.telephony.sip.message import Headers, SipMessage, SipRequest, SipResponse
from callfleet.telephony.sip.sdp import SessionDescription, negotiate, parse_sdp
from callfleet.telephony.sip.transaction import NonInviteClientTransaction, SipTimers
from callfleet.telephony.sip.transport import Address, SipTransport, TcpTransport, UdpTransport
from callfleet.telephony.sip.uri import parse_name_addr, parse_uri, parse_via, split_header_list

__all__ = [
    "ENDED_BY_CALLER",
    "ENDED_BY_SIMULATOR",
    "InviteRecord",
    "PhoneSimulator",
    "SimulatedCall",
    "SimulatorConfig",
    "SipSimulatorCarrier",
    "normalise_number",
]

log = logging.getLogger(__name__)

SERVER = "callfleet-simulator"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER"
ENDED_BY_CALLER = "caller"
ENDED_BY_SIMULATOR = "simulator"
_IN_DIALOG_ONLY = ("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER")
_NOT_ALLOWED = ("REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH")
_SEPARATORS = re.compile(r"[\s\-().]")
_CONVERSATION_OVER_S = 4.0
"""How long a person gives the caller to answer, and the quiet that ends a conversation."""


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; see `PhoneSimulator.address`."""
    transport: str = "udp"
    """`udp` or `tcp`."""
    time_scale: float = 1.0
    """Multiplies every ring, talk and greeting time; 0 is the fast mode for load tests."""
    rtp_port_range: tuple[int, int] = (40000, 49999)
    advertised_host: str | None = None
    """The address put in Contact and SDP; defaults to the bound host."""
    username: str | None = None
    password: str | None = None
    """With both set, every new INVITE must answer a 407 digest challenge."""
    realm: str = "callfleet-simulator"
    max_concurrent: int | None = None
    """Calls beyond this many live ones get 503 with `Retry-After: overload_retry_after_s`."""
    overload_retry_after_s: int = 1
    fast_hold_s: float = 0.2
    """Fast mode: how long an answered call stays up (silence) before our BYE."""
    beep_s: float = 0.5
    """Length of the voicemail beep (not scaled: beep detectors need a real tone)."""
    voicemail_max_s: float = 120.0
    """Longest message a voicemail box records (scaled)."""
    max_ring_s: float = 180.0
    """A no-answer phone gives up with 480 after this many real seconds."""
    record_dir: Path | None = None
    """If set, what each answered call heard is also written there as a WAV file."""
    transfer_hangup_s: float = 2.0
    """After a REFER's NOTIFY, our BYE if the caller has not hung up (not scaled)."""
    timers: SipTimers = field(default_factory=SipTimers)

    def __post_init__(self) -> None:
        if self.transport.lower() not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, not {self.transport!r}")
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")


@dataclass(frozen=True)
class InviteRecord:
    """One INVITE as it arrived (retransmissions and re-INVITEs included)."""

    to_number: str
    call_id: str
    cseq: int
    branch: str
    received_at: datetime
    is_retransmission: bool
    in_dialog: bool = False
    """A re-INVITE inside an established call."""
    challenged: bool = False
    """Answered with the 407 digest challenge (the caller is expected to retry)."""
    source: Address = ("", 0)
    callfleet_call: str | None = None
    """The caller's `X-Callfleet-Call` header (`<call id>;attempt=<n>`), if it sent one."""


@dataclass
class SimulatedCall:
    """What happened to one call (one Call-ID), from the simulator's side."""

    call_id: str
    number: str
    behaviour: Behaviour
    received_at: datetime
    responses: list[int] = field(default_factory=list)
    """Status codes sent for the initial INVITE, in order (retransmissions not repeated)."""
    final_response: SipResponse | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    """`caller` (BYE or CANCEL) or `simulator` (our BYE or final response); None while live."""
    requests: list[str] = field(default_factory=list)
    """Methods of the caller's requests after the INVITE (ACK, CANCEL, BYE, ...), in order."""
    beep_at: datetime | None = None
    heard: bytearray = field(default_factory=bytearray)
    """The PCM (8 kHz, 16-bit) heard from the caller: a person's whole call from the
    caller's first RTP packet; a voicemail box's after the beep (or the greeting)."""
    recording_from: datetime | None = None
    """When `heard` started: the answer, or the end of the beep (or greeting)."""
    recording_path: Path | None = None
    """The WAV of `heard`, written when the call ended (with `record_dir` set)."""
    said: list[str] = field(default_factory=list)
    """A person's lines as it started saying them (the greeting first)."""
    latencies_ms: list[float] = field(default_factory=list)
    """For each line a person finished with the caller quiet: the delay from its last
    frame sent to the arrival of the caller's next speech, in ms."""
    barge_in_stop_ms: float | None = None
    """Barge-in numbers: from the start of the line said over the caller to the
    caller's audio going quiet, in ms; None if it never did (or no barge-in)."""
    transferred_to: str | None = None
    """The Refer-To URI of a REFER the caller sent."""
    packets_sent: int = 0
    packets_received: int = 0
    dtmf: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def final_status(self) -> int | None:
        return self.final_response.status if self.final_response is not None else None


def normalise_number(user: str) -> str:
    """The Request-URI user part as E.164: `+12125550101`, `12125550101` -> `+12125550101`."""
    text = _SEPARATORS.sub("", unquote(user).split(";")[0])
    if text.isdigit():
        if len(text) == 10:
            return "+1" + text
        return "+" + text
    return text


def _now() -> datetime:
    return datetime.now(UTC)


def _digest_fields(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    fields: dict[str, str] = {}
    for part in split_header_list(rest):
        name, sep, val = part.partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            fields[name.strip().lower()] = val
    return fields


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


def _build_response(
    request: SipRequest,
    source: Address,
    status: int,
    reason: str,
    *,
    to_tag: str | None,
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> SipResponse:
    h = Headers()
    for index, via in enumerate(request.headers.values("Via")):
        h.add("Via", _with_received(via, source) if index == 0 else via)
    h.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if to_tag and status > 100 and request.to_addr.tag is None:
        to += f";tag={to_tag}"
    h.add("To", to)
    h.add("Call-ID", request.call_id)
    h.add("CSeq", request.headers.get("CSeq") or "")
    h.add("Server", SERVER)
    for name, value in headers:
        h.add(name, value)
    return SipResponse(headers=h, status=status, reason=reason, body=body)


class _ServerTx:
    """A server transaction: the request, where it came from, and our last response."""

    __slots__ = ("challenged", "confirmed", "final", "handles", "in_dialog", "key", "number",
                 "request", "response", "session", "source")  # fmt: skip

    def __init__(self, key: tuple[str, str, str], request: SipRequest, source: Address) -> None:
        self.key = key
        self.request = request
        self.source = source
        self.response: SipResponse | None = None
        self.final = False
        self.handles: list[asyncio.TimerHandle] = []
        self.number = ""
        self.in_dialog = False
        self.challenged = False
        self.confirmed = False
        """The ACK of our non-2xx final has arrived."""
        self.session: _Session | None = None

    def cancel_timers(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()


class _Session:
    """One call: the initial INVITE's transaction, its dialog, media and behaviour script."""

    def __init__(
        self, sim: PhoneSimulator, tx: _ServerTx, record: SimulatedCall, persona: Persona
    ) -> None:
        self.sim = sim
        self.tx = tx
        self.record = record
        self.persona = persona
        self.local_tag = new_tag()
        invite = tx.request
        contacts = invite.headers.values("Contact")
        target = str(parse_name_addr(contacts[0]).uri) if contacts else str(invite.from_addr.uri)
        local = parse_name_addr(invite.headers.get("To") or "")
        remote = parse_name_addr(invite.headers.get("From") or "")
        local.params.pop("tag", None)
        remote.params.pop("tag", None)
        self.dialog = Dialog(
            call_id=invite.call_id, local_tag=self.local_tag, remote_tag=invite.from_addr.tag or "",
            local_addr=str(local), remote_addr=str(remote), remote_target=target,
            route_set=invite.headers.values("Record-Route"), local_cseq=secrets.randbelow(1000),
            remote_cseq=invite.cseq[0],
        )  # fmt: skip
        self.dest = tx.source
        self.state = "trying"  # trying -> early -> accepted -> ended
        self.offer: SessionDescription | None = None
        self.sdp: LocalSdp | None = None
        self.last_sdp = b""
        self.rtp: RtpSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.acked = asyncio.Event()
        self._pending_2xx: dict[int, asyncio.TimerHandle] = {}
        self._awaiting_answer: set[int] = set()
        self._hear_limit = 0
        self.conversation: voices.Conversation | None = None

    # -- responses to the initial INVITE -------------------------------------------

    def _respond(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        response = self.sim._reply(
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
        call ended meanwhile. `record_s` caps how much of the caller's audio `_hear` keeps.
        """
        cfg = self.sim.config
        try:
            self.rtp = await RtpSession.open(
                self.sim.media_host, port_range=cfg.rtp_port_range,
                inactivity_timeout_s=3600.0,
            )  # fmt: skip
        except OSError as exc:
            log.warning("simulator: no RTP port for %s: %s", self.record.call_id, exc)
            self.final(500, "Server Internal Error")
            return False
        if self.tx.final or self.state == "ended":
            await self.rtp.close()
            return False
        rtp = self.rtp
        rtp.on_dtmf = self.record.dtmf.append
        self.sdp = LocalSdp(self.sim.media_host, rtp.local_port)
        cseq = self.tx.request.cseq[0]
        if self.offer is not None:
            body, media = self.sdp.answer(self.offer)
            if cfg.time_scale > 0:
                rtp.apply(media)
            # Fast mode starts no RTP stream (nothing sent, the caller's ignored): at
            # a few hundred calls in the air, 50 packets a second each way in Python
            # made the test rig the bottleneck.
        else:
            body = self.sdp.offer()
            self._awaiting_answer.add(cseq)
        self.last_sdp = body
        response = self._respond(200, "OK", self._answer_headers(), body)
        self.record.final_response = response
        self.record.answered_at = _now()
        self.state = "accepted"
        self._hear_limit = int(record_s * audio.SAMPLE_RATE) * 2
        self._retransmit_2xx(response, cseq)
        return True

    def _answer_headers(self) -> list[tuple[str, str]]:
        return [
            ("Contact", self.sim.contact(self.record.number)),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ]

    def _retransmit_2xx(self, response: SipResponse, cseq: int) -> None:
        """Resend the 2xx (T1 doubling to T2) until its ACK; give up after 64*T1."""
        loop = asyncio.get_running_loop()
        timers = self.sim.config.timers
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
            self.sim._send(response, self.dest)
            interval = min(2 * interval, timers.t2)
            self._pending_2xx[cseq] = loop.call_later(interval, resend)

        if self.sim.reliable:
            interval = timers.give_up  # TCP: nothing to resend, only the give-up
        self._pending_2xx[cseq] = loop.call_later(interval, resend)

    def _ack_timeout(self, cseq: int) -> None:
        if cseq != self.tx.request.cseq[0]:
            return
        log.info("simulator: no ACK for the 2xx of %s; hanging up", self.record.call_id)
        self.acked.set()
        self.sim._spawn(self.hangup())

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
        if not message.body or message.content_type != "application/sdp" or self.rtp is None:
            return
        try:
            self.rtp.apply(negotiate(parse_sdp(message.body)))
        except SdpError as exc:
            log.info("simulator: unusable SDP answer in ACK: %s", exc)

    def cancelled(self, request: SipRequest) -> None:
        self.record.requests.append(request.method)
        self.final(487, "Request Terminated")

    def on_request(self, tx: _ServerTx) -> None:
        request = tx.request
        method = request.method
        if not self.dialog.accept_remote_cseq(request.cseq[0]):
            self.sim._reply(tx, 500, "Server Internal Error", headers=[("Retry-After", "1")])
            return
        self.record.requests.append(method)
        if method == "BYE":
            self.sim._reply(tx, 200, "OK")
            if not self.tx.final:  # BYE on the early dialog (RFC 3261 §15)
                self.final(487, "Request Terminated")
            self.end(ENDED_BY_CALLER)
        elif method in ("INVITE", "UPDATE"):
            self._offer_answer(tx)
        elif method == "INFO":
            self.sim._reply(tx, 200, "OK")
            self._dtmf_info(request)
        elif method == "OPTIONS":
            self.sim._reply(tx, 200, "OK", headers=self.sim.capabilities())
        elif method == "REFER":
            self._refer(tx)
        else:
            self.sim._reply(tx, 501, "Not Implemented", headers=[("Allow", ALLOW)])

    def _refer(self, tx: _ServerTx) -> None:
        """RFC 3515 blind transfer: 202, then its outcome (always a success) in a NOTIFY."""
        if self.state != "accepted":
            self.sim._reply(tx, 403, "Forbidden (not answered)")
            return
        try:
            target = str(parse_name_addr(tx.request.headers.get("Refer-To") or "").uri)
        except SipParseError:
            self.sim._reply(tx, 400, "Bad Request (Refer-To)")
            return
        contact = [("Contact", self.sim.contact(self.record.number))]
        self.sim._reply(tx, 202, "Accepted", headers=contact)
        self.record.transferred_to = target
        if self.conversation is not None:
            self.conversation.hush()  # the person is being put through: they stop talking
        self.sim._spawn(self._transferred())

    async def _transferred(self) -> None:
        notify = self.dialog.create_request(
            "NOTIFY", self.sim.via(), contact=self.sim.contact(self.record.number),
            body=b"SIP/2.0 200 OK\r\n", content_type="message/sipfrag",
            extra=[("Event", "refer"), ("Subscription-State", "terminated;reason=noresource")],
        )  # fmt: skip
        try:
            await self.sim._request(notify, self.dest)
        except SipError as exc:
            log.info("simulator: NOTIFY for %s got no answer: %s", self.record.call_id, exc)
        await self._wait_ended(self.sim.config.transfer_hangup_s)
        await self.hangup()

    def _offer_answer(self, tx: _ServerTx) -> None:
        """A re-INVITE or UPDATE: answer its offer, or (re-INVITE) offer our current SDP."""
        request = tx.request
        invite = request.method == "INVITE"
        if self.state != "accepted" or self.sdp is None or self.rtp is None:
            if invite:
                self.sim._reply(tx, 491, "Request Pending")
            else:  # UPDATE without an offer while ringing, or before media: nothing to change
                self.sim._reply(tx, 200, "OK")
            return
        self.dialog.refresh_target(request)
        headers = [("Contact", self.sim.contact(self.record.number)), ("Allow", ALLOW)]
        body = b""
        if request.body and request.content_type == "application/sdp":
            try:
                body, media = self.sdp.answer(parse_sdp(request.body))
            except SdpError as exc:
                self.sim._reply(
                    tx, 488, "Not Acceptable Here", headers=[("Warning", f'399 {SERVER} "{exc}"')]
                )
                return
            self.rtp.apply(media)
            self.last_sdp = body
        elif invite:
            body = self.last_sdp
            self._awaiting_answer.add(request.cseq[0])
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = self.sim._reply(tx, 200, "OK", headers=headers, body=body)
        if invite:
            self._retransmit_2xx(response, request.cseq[0])

    def _dtmf_info(self, request: SipRequest) -> None:
        if request.content_type != "application/dtmf-relay":
            return
        for line in request.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                self.record.dtmf.append(value.strip()[:1])

    # -- the behaviour -------------------------------------------------------------

    def start(self) -> None:
        request = self.tx.request
        if self.persona.behaviour is Behaviour.UNKNOWN:
            self.final(404, "Not Found")
            return
        if request.body and request.content_type == "application/sdp":
            try:
                self.offer = parse_sdp(request.body)
                negotiate(self.offer)
            except SdpError as exc:
                self.final(488, "Not Acceptable Here", [("Warning", f'399 {SERVER} "{exc}"')])
                return
        self.provisional(100, "Trying")
        self.task = self.sim._spawn(self._script())

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.sim.config.time_scale)

    async def _wait_ended(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.record.ended.wait()

    async def _script(self) -> None:
        cfg = self.sim.config
        persona = self.persona
        behaviour = persona.behaviour
        fast = cfg.time_scale == 0
        if behaviour is Behaviour.UNREACHABLE:
            await self._pause(persona.ring_s)
            # The network fails the call. Not 503: that asks the caller to retry later.
            self.final(502, "Bad Gateway")
        elif behaviour is Behaviour.BUSY:
            await self._pause(persona.ring_s)
            self.final(486, "Busy Here")
        elif behaviour is Behaviour.DECLINE:
            if not fast:
                self.provisional(180, "Ringing")
                await self._pause(persona.ring_s)
            self.final(603, "Decline")
        elif behaviour is Behaviour.NO_ANSWER:
            self.provisional(180, "Ringing")
            await asyncio.sleep(cfg.max_ring_s)
            self.final(480, "Temporarily Unavailable")
        elif fast:
            if await self.answer():
                await self._wait_ended(cfg.fast_hold_s)
                await self.hangup()
        else:
            self.provisional(180, "Ringing")
            # Render the persona's lines while it rings, so it speaks without delay. The
            # answer never waits for them: a render still running (a cold cache on a busy
            # box, a tiny time scale) only delays the first words.
            rendering = asyncio.ensure_future(voices.speak_all(persona.texts, persona.voice))
            try:
                await self._pause(persona.ring_s)
                if behaviour is Behaviour.HUMAN:
                    await self._converse(rendering)
                else:
                    await self._voicemail(rendering)
            finally:
                rendering.cancel()  # the call ended first

    async def _converse(self, rendering: asyncio.Future[dict[str, bytes]]) -> None:
        """A person: greet, take turns with the caller, hang up after talk_s (scaled)."""
        persona = self.persona
        loop = asyncio.get_running_loop()
        talk_s = persona.talk_s * self.sim.config.time_scale
        if not await self.answer(record_s=talk_s + 10.0):
            return
        answered = loop.time()
        self._start_recording()
        lines = await rendering

        def line(text: str | None) -> voices.Utterance | None:
            return voices.Utterance(text, lines[text]) if text else None

        conversation = voices.Conversation(
            line(persona.greeting),
            [voices.Utterance(text, lines[text]) for text in persona.lines],
            barge_in=line(persona.barge_in),
            clock=loop.time,
        )
        self.conversation = conversation
        self.record.said = conversation.said
        self.record.latencies_ms = conversation.latencies_ms
        if self.rtp is not None and self.state == "accepted":
            self.rtp.source = conversation
        await self._wait_ended(talk_s - (loop.time() - answered))
        # Nobody hangs up mid-sentence or mid-conversation: finish the line, give the
        # caller a moment to answer it, and once they have joined in, say the script and
        # let them fall quiet; all within talk_s of real time (time_scale shortens waits,
        # not talk).
        latest = answered + max(talk_s, persona.talk_s)
        while conversation.under_way(_CONVERSATION_OVER_S) and loop.time() < latest:
            await self._wait_ended(min(0.1, latest - loop.time()))
        await self.hangup()

    async def _voicemail(self, rendering: asyncio.Future[dict[str, bytes]]) -> None:
        """A voicemail box: the greeting, the beep (or not), then record until hung up."""
        cfg = self.sim.config
        longest = cfg.voicemail_max_s * cfg.time_scale
        if not await self.answer(record_s=longest):
            return
        segments = [("greeting", (await rendering)[self.persona.greeting])]
        if self.persona.beep:
            segments.append(("beep", audio.beep(cfg.beep_s)))
        if self.rtp is not None and self.state == "accepted":
            self.rtp.source = audio.Playlist(segments, on_mark=self._mark)
        played = sum(len(pcm) for _, pcm in segments) / (2 * audio.SAMPLE_RATE)
        await self._wait_ended(played + longest)
        await self.hangup()

    def _mark(self, label: str) -> None:
        if self.rtp is None or self.state != "accepted":
            return
        if label == "beep":
            self.record.beep_at = _now()
        if label == ("beep" if self.persona.beep else "greeting"):
            self._start_recording()  # the message starts now

    def _start_recording(self) -> None:
        if self.rtp is not None and self.state == "accepted":
            self.record.recording_from = _now()
            self.rtp.on_audio = self._hear

    def _hear(self, frame: bytes) -> None:
        if self.state != "accepted":
            return
        heard = self.record.heard
        if len(heard) < self._hear_limit:
            heard.extend(frame[: self._hear_limit - len(heard)])
        if self.conversation is not None and self.rtp is not None:
            # the frame played now arrived about as many ticks ago as there are frames
            # queued behind it in the jitter buffer
            self.conversation.hear(frame, age_s=len(self.rtp.jitter) * voices.FRAME_S)

    async def hangup(self) -> None:
        """Our BYE, once the 2xx was ACKed (or its retransmissions gave up)."""
        if self.state != "accepted":
            return
        if not self.acked.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sim.config.timers.give_up):
                    await self.acked.wait()
        if self.state != "accepted":
            return
        bye = self.dialog.create_request("BYE", self.sim.via())
        self.end(ENDED_BY_SIMULATOR)
        try:
            await self.sim._request(bye, self.dest)
        except SipError as exc:
            log.info("simulator: BYE for %s got no answer: %s", self.record.call_id, exc)

    # -- the end -------------------------------------------------------------------

    def end(self, by: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        record = self.record
        record.ended_at = _now()
        record.ended_by = by
        for handle in self._pending_2xx.values():
            handle.cancel()
        self._pending_2xx.clear()
        self.acked.set()
        if self.conversation is not None:
            record.barge_in_stop_ms = self.conversation.barge_in_stop_ms
        rtp = self.rtp
        if rtp is not None:
            rtp.on_audio = None
            record.packets_sent = rtp.packets_sent
            record.packets_received = rtp.packets_received
            self.sim._spawn(rtp.close())
        self._save_recording()
        self.sim._session_ended(self)
        record.ended.set()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def _save_recording(self) -> None:
        folder = self.sim.config.record_dir
        record = self.record
        if folder is None or record.recording_from is None:
            return
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{record.number}-{record.call_id}")[:120]
        path = folder / f"{name}.wav"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            audio.write_wav(path, bytes(record.heard))
        except OSError as exc:
            log.warning("simulator: cannot write %s: %s", path, exc)
            return
        record.recording_path = path

    def abort(self) -> None:
        """Shutdown: release the caller (BYE, or 503 while unanswered), without waiting."""
        if self.state == "accepted":
            bye = self.dialog.create_request("BYE", self.sim.via())
            self.sim._send(bye, self.dest)
            self.end(ENDED_BY_SIMULATOR)
        elif self.state != "ended":
            self.final(503, "Service Unavailable")


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
        self._dialogs: dict[tuple[str, str], _Session] = {}
        self._live: set[_Session] = set()
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
        log.info("phone simulator listening on %s", self.describe())

    def _warm_up(self) -> None:
        """Make the beep now, and say at start (not mid-call) if espeak-ng is missing."""
        audio.beep(self.config.beep_s)
        voices.espeak_available()

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

    def via(self) -> str:
        _, port = self.address
        name = self._transport.name if self._transport is not None else "UDP"
        return f"SIP/2.0/{name} {self.media_host}:{port};branch={new_branch()};rport"

    def contact(self, user: str) -> str:
        _, port = self.address
        suffix = ";transport=tcp" if self.reliable else ""
        return f"<sip:{user}@{self.media_host}:{port}{suffix}>"

    def capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp")]

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

    def reset(self) -> None:
        """Forget the records (live calls go on)."""
        self.invites.clear()
        self.calls = {s.record.call_id: s.record for s in self._live}
        self.max_concurrent_seen = len(self._live)
        self.rejected_over_capacity = 0

    # -- sending -------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, message: SipMessage, dest: Address) -> None:
        if self._transport is None:
            return
        try:
            self._transport.send(message, dest)
        except TransportError as exc:
            log.info("simulator: cannot send %r to %s: %s", message, dest, exc)

    async def _request(self, request: SipRequest, dest: Address) -> SipResponse:
        transport = self._transport
        if transport is None:
            raise TransportError("the phone simulator is closed")

        def send(message: SipMessage) -> None:
            transport.send(message, dest)

        def forget(tx: object) -> None:
            if isinstance(tx, NonInviteClientTransaction) and self._clients.get(tx.key) is tx:
                del self._clients[tx.key]

        tx = NonInviteClientTransaction(
            request, send, reliable=transport.reliable, timers=self.config.timers,
            on_terminated=forget,
        )  # fmt: skip
        self._clients[tx.key] = tx
        tx.start()
        return await tx.result()

    def _reply(
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
        response = _build_response(
            request, tx.source, status, reason, to_tag=tag, headers=headers, body=body
        )
        tx.response = response
        self._send(response, tx.source)
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
            self._send(tx.response, tx.source)
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
            log.exception("simulator: failed to handle %r from %s", message, source)

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
                self._send(tx.response, tx.source)
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
                self._reply(tx, 500, "Server Internal Error")

    def _record(
        self, tx: _ServerTx, request: SipRequest, source: Address, *, retransmission: bool
    ) -> None:
        self.invites.append(InviteRecord(
            to_number=tx.number, call_id=request.call_id, cseq=request.cseq[0],
            branch=request.top_via.branch or "", received_at=_now(),
            is_retransmission=retransmission, in_dialog=tx.in_dialog,
            challenged=tx.challenged, source=source,
            callfleet_call=request.headers.get("X-Callfleet-Call"),
        ))  # fmt: skip

    def _find_dialog(self, request: SipRequest) -> _Session | None:
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
                self._reply(tx, 481, "Call/Transaction Does Not Exist")
            else:
                session.on_request(tx)
            return
        tx.challenged = not self._authorised(request)
        self._record(tx, request, source, retransmission=False)
        if uri is None:
            self._reply(tx, 416, "Unsupported URI Scheme")
        elif tx.challenged:
            self._challenge(tx)
        elif request.call_id in self.calls and self.calls[request.call_id].ended_at is None:
            self._reply(tx, 482, "Loop Detected")
        elif self.config.max_concurrent is not None and (
            len(self._live) >= self.config.max_concurrent
        ):
            self.rejected_over_capacity += 1
            retry = str(self.config.overload_retry_after_s)
            self._reply(tx, 503, "Service Unavailable", headers=[("Retry-After", retry)])
        else:
            self._new_call(tx)

    def _new_call(self, tx: _ServerTx) -> None:
        persona = persona_for(tx.number)
        record = SimulatedCall(tx.request.call_id, tx.number, persona.behaviour, _now())
        try:
            session = _Session(self, tx, record, persona)
        except SipParseError as exc:
            self._reply(tx, 400, f"Bad Request ({exc})"[:100])
            return
        self.calls[record.call_id] = record
        self._dialogs[(record.call_id, session.local_tag)] = session
        self._live.add(session)
        self._idle.clear()
        self.max_concurrent_seen = max(self.max_concurrent_seen, len(self._live))
        tx.session = session
        session.start()

    def _session_ended(self, session: _Session) -> None:
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
            self._reply(tx, 481, "Call/Transaction Does Not Exist")
            return
        session = invite.session
        self._reply(tx, 200, "OK", to_tag=session.local_tag if session is not None else None)
        if session is not None and not invite.final:
            session.cancelled(tx.request)

    def _on_other(self, tx: _ServerTx) -> None:
        request = tx.request
        method = request.method
        if request.to_addr.tag is None:
            if method == "OPTIONS":
                self._reply(tx, 200, "OK", headers=self.capabilities())
            elif method in _IN_DIALOG_ONLY:
                self._reply(tx, 481, "Call/Transaction Does Not Exist")
            elif method in _NOT_ALLOWED:
                self._reply(tx, 405, "Method Not Allowed", headers=[("Allow", ALLOW)])
            else:
                self._reply(tx, 501, "Not Implemented", headers=[("Allow", ALLOW)])
            return
        session = self._find_dialog(request)
        if session is None:
            self._reply(tx, 481, "Call/Transaction Does Not Exist")
        else:
            session.on_request(tx)

    # -- digest authentication -----------------------------------------------------

    def _authorised(self, request: SipRequest) -> bool:
        cfg = self.config
        if cfg.username is None or cfg.password is None:
            return True
        credentials = Credentials(cfg.username, cfg.password)
        for value in request.headers.get_all("Proxy-Authorization"):
            got = _digest_fields(value)
            nonce = got.get("nonce", "")
            if got.get("username") != cfg.username or got.get("realm") != cfg.realm:
                continue
            if nonce not in self._nonces:
                continue
            qop = got.get("qop")
            challenge = Challenge(
                cfg.realm, nonce, algorithm=got.get("algorithm", "MD5"),
                qop=(qop,) if qop else (), opaque=got.get("opaque"),
            )  # fmt: skip
            try:
                expected = build_authorization(
                    challenge, credentials, method=request.method, uri=got.get("uri", ""),
                    body=request.body, nonce_count=int(got.get("nc", "1"), 16),
                    cnonce=got.get("cnonce"),
                )  # fmt: skip
            except (KeyError, ValueError, SipError):
                continue
            want = _digest_fields(expected).get("response", "")
            if hmac.compare_digest(want, got.get("response", "")):
                return True
        return False

    def _challenge(self, tx: _ServerTx) -> None:
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = None
        while len(self._nonces) > 10_000:
            del self._nonces[next(iter(self._nonces))]
        value = f'Digest realm="{self.config.realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
        self._reply(tx, 407, "Proxy Authentication Required",
                    headers=[("Proxy-Authenticate", value)])  # fmt: skip


class SipSimulatorCarrier:
    """The carrier port for calls without a trunk: real SIP and RTP to a `PhoneSimulator`.

    The simulator starts on the first call (on a free loopback port) and every
    request is sent to it as its trunk through `sip` (a shared `SipCarrier`, or one of
    its own). `close()` stops the simulator, and the `SipCarrier` only if it owns it.
    """

    def __init__(self, config: SimulatorConfig | None = None, sip: SipCarrier | None = None):
        self.simulator = PhoneSimulator(config)
        self._sip = sip or SipCarrier()
        self._owns_sip = sip is None
        self._lock = asyncio.Lock()
        self._started = False

    def describe(self) -> str:
        return (
            "phone simulator over SIP and RTP (test numbers +1 NPA 555-01XX; "
            f"time scale {self.simulator.config.time_scale:g})"
        )

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        async with self._lock:
            if not self._started:
                await self.simulator.start()
                self._started = True
        routed = dataclasses.replace(request, trunk=self.simulator.trunk())
        return await self._sip.place_call(routed, events)

    async def close(self) -> None:
        await self.simulator.close()
        self._started = False
        if self._owns_sip:
            await self._sip.close()
