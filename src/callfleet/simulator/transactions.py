"""The simulator's server transactions: a request, where it came from, our last response.

`PhoneSimulator` keeps one per request it answers, so a retransmitted request gets
the last response again and a non-2xx final to an INVITE is resent until its ACK.
`session` is the call an initial INVITE started (its type is the simulator's).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from callfleet.telephony.sip.message import SipRequest, SipResponse
from callfleet.telephony.sip.transport import Address

__all__ = ["ServerTransaction"]

S = TypeVar("S")


class ServerTransaction(Generic[S]):
    """A server transaction: the request, where it came from, and our last response."""

    __slots__ = (
        "challenged",
        "confirmed",
        "final",
        "handles",
        "in_dialog",
        "key",
        "number",
        "request",
        "response",
        "session",
        "source",
    )

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
        self.session: S | None = None

    def cancel_timers(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
