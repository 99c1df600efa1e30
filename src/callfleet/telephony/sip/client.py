"""`SipClient`: the user-agent client that places calls towards a trunk or proxy.

One client owns one transport (UDP or TCP) and any number of concurrent calls.
`invite()` returns an `InviteResult` whose `call` is the answered `Call`; failures
(busy, no answer, ...) are results, not exceptions. Only hosts the client has
dialled (and `SipLimits.trusted_peers`) are heard at all. Requests from them are
routed to their call by Call-ID and tags; a request for a dialog we do not know
gets 481, and one outside any dialog gets 200 (OPTIONS), 480 (INVITE: we do not
take calls) or 405/501.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

from callfleet.telephony.sip.auth import Credentials
from callfleet.telephony.sip.call import Call
from callfleet.telephony.sip.config import SipClientConfig
from callfleet.telephony.sip.dialog import Dialog
from callfleet.telephony.sip.endpoint import SipEndpoint, new_tag
from callfleet.telephony.sip.errors import TransportError
from callfleet.telephony.sip.host import capability_headers, contact_value, via_value
from callfleet.telephony.sip.invite import InviteResult, OutgoingInvite
from callfleet.telephony.sip.media import MediaHandler
from callfleet.telephony.sip.message import Headers, SipRequest, SipResponse
from callfleet.telephony.sip.transport import Address
from callfleet.telephony.sip.uri import parse_uri

__all__ = ["SipClient", "SipClientConfig"]


class SipClient:
    """Places calls over one transport; the `DialogHost` of its calls and INVITEs."""

    ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER"

    def __init__(self, config: SipClientConfig | None = None) -> None:
        self.config = config or SipClientConfig()
        self.endpoint = SipEndpoint(self.config.timers, self.config.limits)
        self.endpoint.on_request = self._on_request
        self.endpoint.on_stray_2xx = self._on_stray_2xx
        self._calls: dict[tuple[str, str], Call] = {}
        self._invites: dict[str, OutgoingInvite] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        cfg = self.config
        await self.endpoint.open(cfg.transport, cfg.bind_host, cfg.bind_port)

    async def close(self) -> None:
        for call in list(self._calls.values()):
            await call.aclose()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.endpoint.close()

    async def __aenter__(self) -> SipClient:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- identity ------------------------------------------------------------------

    @property
    def host(self) -> str:
        transport = self.endpoint.transport
        bound = transport.local_host if transport else self.config.bind_host
        return self.config.advertised_host or bound

    @property
    def port(self) -> int:
        transport = self.endpoint.transport
        return transport.local_port if transport else 0

    @property
    def transport_name(self) -> str:
        transport = self.endpoint.transport
        return transport.name if transport else self.config.transport.upper()

    def via(self) -> str:
        return via_value(self.transport_name, self.host, self.port)

    def contact(self) -> str:
        return contact_value(self.config.user, self.host, self.port, self.transport_name)

    def capabilities(self) -> list[tuple[str, str]]:
        return capability_headers(self.ALLOW, timer=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resolve(self, host: str, port: int) -> Address:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host.strip("[]"), port, family=socket.AF_INET)
        except OSError as exc:
            raise TransportError(f"cannot resolve {host}: {exc}") from exc
        return str(infos[0][4][0]), int(infos[0][4][1])

    def dialog_destination(self, dialog: Dialog, proxy: Address | None) -> Address:
        return proxy if proxy is not None else dialog.destination()

    # -- placing calls -------------------------------------------------------------

    async def invite(
        self,
        target: str,
        *,
        media: MediaHandler,
        from_uri: str | None = None,
        credentials: Credentials | None = None,
        ring_timeout_s: float = 30.0,
        hangup: asyncio.Event | None = None,
        on_ringing: Callable[[], Awaitable[None]] | None = None,
        proxy: Address | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> InviteResult:
        """Call `target` (a SIP URI); send everything to `proxy` if given (a trunk)."""
        uri = parse_uri(target)
        dest = proxy or await self.resolve(*uri.hostport())
        await self._connect(dest)
        from_addr = f"<{from_uri}>" if from_uri else f"<sip:{self.config.user}@{self.host}>"
        outgoing = OutgoingInvite(
            self,
            target=target,
            from_addr=from_addr,
            dest=dest,
            media=media,
            credentials=credentials,
            extra_headers=list(headers or []),
            in_dialog_dest=proxy,
        )
        self._invites[outgoing.call_id] = outgoing
        try:
            result = await outgoing.run(
                ring_timeout_s=ring_timeout_s, hangup=hangup, on_ringing=on_ringing
            )
        finally:
            if outgoing.call is None or outgoing.call.ended.is_set():
                self._invites.pop(outgoing.call_id, None)
        return result

    async def _connect(self, dest: Address) -> None:
        transport = self.endpoint.transport
        if transport is None:
            raise TransportError("SipClient is not started")
        self.endpoint.trust(dest[0])  # its in-dialog requests (BYE, re-INVITE) come back
        await transport.connect(dest)

    async def options(self, target: str, *, proxy: Address | None = None) -> SipResponse:
        """Send an out-of-dialog OPTIONS (a trunk health check) and return the response."""
        uri = parse_uri(target)
        dest = proxy or await self.resolve(*uri.hostport())
        await self._connect(dest)
        h = Headers()
        h.add("Via", self.via())
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{self.config.user}@{self.host}>;tag={new_tag()}")
        h.add("To", f"<{target}>")
        h.add("Call-ID", f"{new_tag()}{new_tag()}@{self.host}")
        h.add("CSeq", "1 OPTIONS")
        h.add("Contact", self.contact())
        h.add("Accept", "application/sdp")
        return await self.endpoint.request(
            SipRequest(headers=h, method="OPTIONS", uri=target), dest
        )

    # -- bookkeeping and routing ---------------------------------------------------

    def register_call(self, call: Call, outgoing: OutgoingInvite) -> None:
        self._calls[(call.dialog.call_id, call.dialog.local_tag)] = call
        self._invites[call.dialog.call_id] = outgoing

    def unregister_call(self, call: Call) -> None:
        key = (call.dialog.call_id, call.dialog.local_tag)
        if self._calls.get(key) is call:
            del self._calls[key]
            self._invites.pop(call.dialog.call_id, None)

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def _on_stray_2xx(self, response: SipResponse) -> None:
        outgoing = self._invites.get(response.call_id)
        if outgoing is not None:
            outgoing.handle_2xx(response)

    def _on_request(self, request: SipRequest, source: Address) -> None:
        ep = self.endpoint
        to_tag = request.to_addr.tag
        if to_tag is not None:
            call = self._calls.get((request.call_id, to_tag))
            if call is not None and call.dialog.matches(request):
                call.handle_request(request, source)
            elif request.method != "ACK":
                ep.respond(request, source, 481, "Call/Transaction Does Not Exist")
            return
        tag = new_tag()
        if request.method == "OPTIONS":
            ep.respond(request, source, 200, "OK", to_tag=tag, headers=self.capabilities())
        elif request.method == "INVITE":
            ep.respond(request, source, 480, "Temporarily Unavailable", to_tag=tag)
        elif request.method == "CANCEL":
            ep.respond(request, source, 481, "Call/Transaction Does Not Exist", to_tag=tag)
        elif request.method in ("ACK",):
            return
        elif request.method in ("BYE", "INFO", "UPDATE", "NOTIFY", "REFER", "PRACK", "MESSAGE"):
            ep.respond(request, source, 481, "Call/Transaction Does Not Exist", to_tag=tag)
        else:
            ep.respond(
                request, source, 501, "Not Implemented", to_tag=tag, headers=self.capabilities()
            )
