"""Client transactions (RFC 3261 §17.1, with the RFC 6026 Accepted state).

`InviteClientTransaction` retransmits the INVITE on Timer A (T1, doubling) until a
response arrives, gives up on Timer B (64*T1) while no response has come, ACKs
every non-2xx final itself (same branch, To tag of the response) and absorbs its
retransmissions until Timer D; after a 2xx it stays Accepted for 64*T1 so that
2xx retransmissions and forked 2xx still reach the transaction user, who must ACK
them. `NonInviteClientTransaction` retransmits on Timer E (T1 doubling to T2),
gives up on Timer F (64*T1) and lingers on Timer K. Over TCP nothing is
retransmitted and the linger timers are zero.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from callfleet.telephony.sip.errors import TransactionTimeout, TransportError
from callfleet.telephony.sip.message import Headers, SipMessage, SipRequest, SipResponse

__all__ = [
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "SipTimers",
    "TxState",
    "build_non_2xx_ack",
]

log = structlog.get_logger(__name__)

Sender = Callable[[SipMessage], None]


@dataclass(frozen=True)
class SipTimers:
    """RFC 3261 timer values in seconds; tests may shrink them."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def give_up(self) -> float:
        """Timers B, F, H and M: 64*T1."""
        return 64 * self.t1


class TxState(enum.Enum):
    CALLING = "calling"  # also "trying" for non-INVITE
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    TERMINATED = "terminated"


def build_non_2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a 300-699 response, sent inside the INVITE transaction (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} ACK")
    return SipRequest(headers=headers, method="ACK", uri=invite.uri)


class _ClientTransaction:
    def __init__(
        self,
        request: SipRequest,
        send: Sender,
        *,
        reliable: bool,
        timers: SipTimers,
        on_terminated: Callable[[_ClientTransaction], None],
    ) -> None:
        self.request = request
        self.branch = request.top_via.branch or ""
        self.state = TxState.CALLING
        self._send = send
        self._reliable = reliable
        self._timers = timers
        self._on_terminated = on_terminated
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._loop = asyncio.get_running_loop()

    @property
    def key(self) -> tuple[str, str]:
        return self.branch, self.request.method

    def _schedule(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel(name)
        self._handles[name] = self._loop.call_later(delay, callback)

    def _cancel(self, *names: str) -> None:
        for name in names:
            handle = self._handles.pop(name, None)
            if handle is not None:
                handle.cancel()

    def _retransmit(self, message: SipMessage) -> None:
        try:
            self._send(message)
        except TransportError as exc:
            log.warning("sip_retransmission_failed", error=str(exc))

    def terminate(self) -> None:
        if self.state is TxState.TERMINATED:
            return
        self.state = TxState.TERMINATED
        self._cancel(*list(self._handles))
        self._on_terminated(self)


class InviteClientTransaction(_ClientTransaction):
    """Delivers every response the TU must see to `on_response`, Timer B to `on_timeout`."""

    def __init__(
        self,
        request: SipRequest,
        send: Sender,
        *,
        reliable: bool,
        timers: SipTimers,
        on_terminated: Callable[[_ClientTransaction], None],
        on_response: Callable[[SipResponse], None],
        on_timeout: Callable[[], None],
    ) -> None:
        super().__init__(
            request, send, reliable=reliable, timers=timers, on_terminated=on_terminated
        )
        self._on_response = on_response
        self._on_timeout = on_timeout
        self._interval = timers.t1
        self._ack: SipRequest | None = None

    def start(self) -> None:
        self._send(self.request)
        if not self._reliable:
            self._schedule("A", self._interval, self._timer_a)
        self._schedule("B", self._timers.give_up, self._timer_b)

    def _timer_a(self) -> None:
        if self.state is TxState.CALLING:
            self._retransmit(self.request)
            self._interval *= 2
            self._schedule("A", self._interval, self._timer_a)

    def _timer_b(self) -> None:
        if self.state is TxState.CALLING:
            self.terminate()
            self._on_timeout()

    def receive(self, response: SipResponse) -> None:
        status = response.status
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            self._cancel("A")
            if status < 200:
                self.state = TxState.PROCEEDING
                self._cancel("B")
            elif status < 300:
                self.state = TxState.ACCEPTED
                self._cancel("B")
                self._schedule("M", self._timers.give_up, self.terminate)
            else:
                self.state = TxState.COMPLETED
                self._cancel("B")
                self._ack = build_non_2xx_ack(self.request, response)
                self._retransmit(self._ack)
                linger = 0.0 if self._reliable else 32.0
                self._schedule("D", linger, self.terminate)
            self._on_response(response)
        elif self.state is TxState.ACCEPTED and 200 <= status < 300:
            self._on_response(response)
        elif self.state is TxState.COMPLETED and status >= 300 and self._ack is not None:
            self._retransmit(self._ack)


class NonInviteClientTransaction(_ClientTransaction):
    """Await `result()` for the final response; raises `TransactionTimeout` on Timer F."""

    def __init__(
        self,
        request: SipRequest,
        send: Sender,
        *,
        reliable: bool,
        timers: SipTimers,
        on_terminated: Callable[[_ClientTransaction], None],
    ) -> None:
        super().__init__(
            request, send, reliable=reliable, timers=timers, on_terminated=on_terminated
        )
        self._interval = timers.t1
        self._result: asyncio.Future[SipResponse] = self._loop.create_future()

    def start(self) -> None:
        self._send(self.request)
        if not self._reliable:
            self._schedule("E", self._interval, self._timer_e)
        self._schedule("F", self._timers.give_up, self._timer_f)

    def _timer_e(self) -> None:
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            self._retransmit(self.request)
            if self.state is TxState.PROCEEDING:
                self._interval = self._timers.t2
            else:
                self._interval = min(2 * self._interval, self._timers.t2)
            self._schedule("E", self._interval, self._timer_e)

    def _timer_f(self) -> None:
        if not self._result.done():
            self._result.set_exception(
                TransactionTimeout(f"no final response to {self.request.method}")
            )
        self.terminate()

    def receive(self, response: SipResponse) -> None:
        if self.state not in (TxState.CALLING, TxState.PROCEEDING):
            return
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return
        self.state = TxState.COMPLETED
        self._cancel("E", "F")
        if not self._result.done():
            self._result.set_result(response)
        self._schedule("K", 0.0 if self._reliable else self._timers.t4, self.terminate)

    async def result(self) -> SipResponse:
        return await asyncio.shield(self._result)
