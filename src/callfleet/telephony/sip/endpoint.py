"""The transaction layer around one transport: matching, server-side caching, 2xx resends.

Responses are matched to client transactions by top-Via branch and CSeq method;
a 2xx to an INVITE that matches no transaction goes to `on_stray_2xx` (the INVITE's
owner must ACK it again). Incoming requests are de-duplicated: a retransmitted
request gets the last response again and never reaches the user. A 2xx we send
for an INVITE is retransmitted (T1 doubling to T2) until its ACK arrives, as
RFC 3261 §13.3.1.4 asks of the UAS core.

Anyone who reaches the port can send, so requests are taken only from hosts we
talk to (`trust()`: the client trusts every host it dials, a trunk or the
simulator) and from `SipLimits.trusted_peers`; a stranger's request is dropped
before it creates any state. The server-transaction table is capped: past
`max_server_transactions`, a request gets 503 and is not remembered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from callfleet.telephony.sip.config import SipLimits
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.telephony.sip.errors import TransportError
from callfleet.telephony.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    build_response,
)
from callfleet.telephony.sip.transaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    SipTimers,
)
from callfleet.telephony.sip.transport import Address, SipTransport, TcpTransport, UdpTransport

__all__ = ["SipEndpoint", "new_branch", "new_tag"]

log = structlog.get_logger(__name__)

RequestHandler = Callable[[SipRequest, Address], None]
Stray2xxHandler = Callable[[SipResponse], None]
_AnyTransaction = InviteClientTransaction | NonInviteClientTransaction
_MAX_PEERS = 4096
"""Dialled hosts remembered as trusted; the oldest is forgotten past this."""


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass
class _ServerEntry:
    source: Address
    response: SipResponse | None = None
    handles: list[asyncio.TimerHandle] = field(default_factory=list)


class SipEndpoint:
    """Owns a transport; sends requests in transactions and answers incoming ones."""

    def __init__(self, timers: SipTimers, limits: SipLimits | None = None) -> None:
        self.timers = timers
        self.limits = limits or SipLimits()
        self.transport: SipTransport | None = None
        self._networks = self.limits.networks()
        self._peers: dict[str, None] = {}  # an ordered set of the hosts we dialled
        self.on_request: RequestHandler = self._reject_all
        self.on_stray_2xx: Stray2xxHandler = lambda response: None
        self._clients: dict[tuple[str, str], _AnyTransaction] = {}
        self._servers: dict[tuple[str, str, str], _ServerEntry] = {}
        self._pending_2xx: dict[tuple[str, int], _ServerEntry] = {}

    async def open(self, transport: str, host: str, port: int) -> None:
        kind = transport.lower()
        if kind == "udp":
            self.transport = await UdpTransport.open(host, port, self._received)
        elif kind == "tcp":
            self.transport = await TcpTransport.open(
                host, port, self._received, limits=self.limits, accept=self.trusted
            )
        else:
            raise TransportError(f"unsupported SIP transport {transport!r}")

    async def close(self) -> None:
        for tx in list(self._clients.values()):
            tx.terminate()
        for entry in [*self._servers.values(), *self._pending_2xx.values()]:
            for handle in entry.handles:
                handle.cancel()
        self._servers.clear()
        self._pending_2xx.clear()
        if self.transport is not None:
            await self.transport.close()
            self.transport = None

    def trust(self, host: str) -> None:
        """Take requests from `host` from now on (a trunk or proxy we are dialling)."""
        self._peers.pop(host, None)
        self._peers[host] = None
        if len(self._peers) > _MAX_PEERS:
            del self._peers[next(iter(self._peers))]

    def trusted(self, host: str) -> bool:
        if host in self._peers:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    @property
    def server_transactions(self) -> int:
        """Incoming transactions remembered now (each for Timer J/H's 32 s)."""
        return len(self._servers)

    def _require(self) -> SipTransport:
        if self.transport is None:
            raise TransportError("endpoint is not open")
        return self.transport

    def send(self, message: SipMessage, dest: Address) -> None:
        self._require().send(message, dest)

    # -- client side ---------------------------------------------------------------

    def start_invite(
        self,
        request: SipRequest,
        dest: Address,
        on_response: Callable[[SipResponse], None],
        on_timeout: Callable[[], None],
    ) -> InviteClientTransaction:
        transport = self._require()
        tx = InviteClientTransaction(
            request,
            lambda m: transport.send(m, dest),
            reliable=transport.reliable,
            timers=self.timers,
            on_terminated=self._forget,
            on_response=on_response,
            on_timeout=on_timeout,
        )
        self._clients[tx.key] = tx
        tx.start()
        return tx

    def start_request(self, request: SipRequest, dest: Address) -> NonInviteClientTransaction:
        transport = self._require()
        tx = NonInviteClientTransaction(
            request,
            lambda m: transport.send(m, dest),
            reliable=transport.reliable,
            timers=self.timers,
            on_terminated=self._forget,
        )
        self._clients[tx.key] = tx
        tx.start()
        return tx

    async def request(self, request: SipRequest, dest: Address) -> SipResponse:
        """Send a non-INVITE request and await its final response."""
        await self._require().connect(dest)
        return await self.start_request(request, dest).result()

    def _forget(self, tx: object) -> None:
        if (
            isinstance(tx, InviteClientTransaction | NonInviteClientTransaction)
            and self._clients.get(tx.key) is tx
        ):
            del self._clients[tx.key]

    # -- incoming ------------------------------------------------------------------

    def _received(self, message: SipMessage, source: Address) -> None:
        if isinstance(message, SipResponse):
            self._received_response(message)
        else:
            self._received_request(message, source)

    def _received_response(self, response: SipResponse) -> None:
        _, method = response.cseq
        tx = self._clients.get((response.top_via.branch or "", method))
        if tx is not None:
            tx.receive(response)
        elif method == "INVITE" and 200 <= response.status < 300:
            self.on_stray_2xx(response)
        else:
            log.debug("sip_unmatched_response_dropped", response=repr(response))

    def _received_request(self, request: SipRequest, source: Address) -> None:
        if not self.trusted(source[0]):
            SIP_DROPS.add("stranger")  # no answer: on UDP the source may be forged
            log.debug("sip_request_from_stranger_dropped", source=source, method=request.method)
            return
        branch = request.top_via.branch or ""
        if request.method == "ACK":
            pending = self._pending_2xx.pop((request.call_id, request.cseq[0]), None)
            if pending is not None:
                for handle in pending.handles:
                    handle.cancel()
            invite = self._servers.get((branch, "INVITE", request.call_id))
            if invite is not None and invite.response is not None and invite.response.status >= 300:
                return  # ACK of a non-2xx final we sent: absorbed by the transaction
        else:
            key = (branch, request.method, request.call_id)
            entry = self._servers.get(key)
            if entry is not None:
                if entry.response is not None:
                    self._safe_send(entry.response, entry.source)
                return
            if len(self._servers) >= self.limits.max_server_transactions:
                SIP_DROPS.add("transactions_full")
                full = build_response(
                    request, 503, "Service Unavailable", headers=[("Retry-After", "5")]
                )
                self._safe_send(full, source)
                return
            entry = _ServerEntry(source)
            self._servers[key] = entry
            loop = asyncio.get_running_loop()
            entry.handles.append(loop.call_later(self.timers.give_up, self._servers.pop, key, None))
        self.on_request(request, source)

    def respond(
        self,
        request: SipRequest,
        source: Address,
        status: int,
        reason: str,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        """Answer `request`, remembering the response for retransmitted copies of it."""
        response = build_response(
            request, status, reason, to_tag=to_tag, headers=headers, body=body
        )
        key = (request.top_via.branch or "", request.method, request.call_id)
        entry = self._servers.get(key)
        if entry is not None and status >= 200:
            entry.response = response
        self._safe_send(response, source)
        reliable = self.transport is None or self.transport.reliable
        if request.method == "INVITE" and 200 <= status < 300 and not reliable:
            self._retransmit_2xx(response, source, (request.call_id, request.cseq[0]))
        return response

    def _retransmit_2xx(self, response: SipResponse, dest: Address, key: tuple[str, int]) -> None:
        entry = _ServerEntry(dest, response)
        self._pending_2xx[key] = entry
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = self.timers.t1

        def resend() -> None:
            nonlocal interval
            if self._pending_2xx.get(key) is not entry:
                return
            if loop.time() - start >= self.timers.give_up:
                del self._pending_2xx[key]
                return
            self._safe_send(response, dest)
            interval = min(2 * interval, self.timers.t2)
            entry.handles.append(loop.call_later(interval, resend))

        entry.handles.append(loop.call_later(interval, resend))

    def _safe_send(self, message: SipMessage, dest: Address) -> None:
        try:
            self.send(message, dest)
        except TransportError as exc:
            log.warning("sip_send_failed", message=repr(message), dest=dest, error=str(exc))

    def _reject_all(self, request: SipRequest, source: Address) -> None:
        if request.method != "ACK":
            self.respond(request, source, 503, "Service Unavailable")
