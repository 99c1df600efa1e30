"""SIP over UDP and TCP with asyncio.

A transport turns bytes into parsed messages and back. Whatever arrives that is
not a SIP message (garbage, truncations, keep-alive CRLFs) is logged and dropped
here and never reaches the transaction layer. TCP frames messages by
Content-Length, keeps one connection per peer, and also listens on its port so a
peer may open its own connection towards our Contact. What it takes from the
network is bounded (`SipLimits`): the body a message may announce, the number of
inbound connections, how long one may stay idle, and (when the owner says who it
trusts) which hosts may connect at all. What it refuses is counted in `SIP_DROPS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable

import structlog

from callfleet.telephony.sip.config import SipLimits
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.telephony.sip.errors import SipParseError, TransportError
from callfleet.telephony.sip.message import MAX_HEADER_BYTES, SipMessage, parse_message

__all__ = ["Address", "MessageHandler", "SipTransport", "TcpTransport", "UdpTransport"]

log = structlog.get_logger(__name__)

Address = tuple[str, int]
MessageHandler = Callable[[SipMessage, Address], None]
PeerFilter = Callable[[str], bool]
"""Whether a host may open a connection to us (None: anyone may)."""
_SOCKET_BUFFER = 4 << 20
"""Bytes asked for each UDP socket's receive and send buffers. With hundreds of calls
in flight, bursts of INVITEs, BYEs and their retransmissions overflowed the default
(~200 KiB) and the kernel dropped datagrams, which Timer E/F then repaired only
after seconds. Linux grants at most `net.core.rmem_max` / `wmem_max`."""
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


class SipTransport(ABC):
    """Sends messages to an address and delivers every parsed message it receives."""

    name: str
    reliable: bool

    def __init__(self, handler: MessageHandler) -> None:
        self._handler = handler
        self.local_host = ""
        self.local_port = 0

    def _deliver(self, data: bytes, source: Address, *, stream: bool) -> None:
        if not data.strip(b"\r\n"):
            return  # RFC 5626 keep-alive
        try:
            message = parse_message(data, stream=stream)
        except SipParseError as exc:
            log.warning("sip_unparseable_data_dropped", source=source, error=str(exc))
            return
        try:
            self._handler(message, source)
        except Exception:  # one bad message must not end a TCP connection other calls share
            log.exception("sip_message_handling_failed", source=source)

    @abstractmethod
    def send(self, message: SipMessage, dest: Address) -> None: ...

    async def connect(self, dest: Address) -> None:
        """Make sure `dest` is reachable before a transaction starts (TCP connects)."""
        del dest

    @abstractmethod
    async def close(self) -> None: ...


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._owner._deliver(data, (str(addr[0]), int(addr[1])), stream=False)

    def error_received(self, exc: Exception) -> None:
        log.info("sip_udp_error", error=str(exc))  # often an ICMP unreachable


def _enlarge_buffers(sock: socket.socket) -> None:
    for label, option in (("receive", socket.SO_RCVBUF), ("send", socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        except OSError as exc:  # some platforms refuse sizes above their limit
            log.debug("sip_udp_buffer_refused", buffer=label, asked=_SOCKET_BUFFER, error=str(exc))
        # Linux doubles the (capped) request to leave room for its bookkeeping and reports that.
        granted = sock.getsockopt(socket.SOL_SOCKET, option)
        log.debug("sip_udp_buffer", buffer=label, asked=_SOCKET_BUFFER, granted=granted)


class UdpTransport(SipTransport):
    name = "UDP"
    reliable = False

    def __init__(self, handler: MessageHandler) -> None:
        super().__init__(handler)
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str, port: int, handler: MessageHandler) -> UdpTransport:
        self = cls(handler)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _enlarge_buffers(sock)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind UDP {host}:{port}: {exc}") from exc
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        self._transport = transport
        self.local_host, self.local_port = sock.getsockname()[:2]
        return self

    def send(self, message: SipMessage, dest: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            raise TransportError("UDP transport is closed")
        self._transport.sendto(message.to_bytes(), dest)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class TcpTransport(SipTransport):
    name = "TCP"
    reliable = True

    def __init__(
        self,
        handler: MessageHandler,
        limits: SipLimits | None = None,
        accept: PeerFilter | None = None,
    ) -> None:
        super().__init__(handler)
        # Without limits (the simulator, ours, whose peer is our own client): the caps,
        # but no idle timeout, which would cut our connection to it during a long call.
        self.limits = limits or SipLimits(tcp_idle_timeout_s=None)
        self._accept = accept
        self._server: asyncio.Server | None = None
        self._writers: dict[Address, asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self._connecting: dict[Address, asyncio.Task[None]] = {}
        self._inbound = 0

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        handler: MessageHandler,
        *,
        limits: SipLimits | None = None,
        accept: PeerFilter | None = None,
    ) -> TcpTransport:
        self = cls(handler, limits, accept)
        try:
            self._server = await asyncio.start_server(
                self._accepted, host, port, limit=2 * MAX_HEADER_BYTES
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on TCP {host}:{port}: {exc}") from exc
        self.local_host, self.local_port = self._server.sockets[0].getsockname()[:2]
        return self

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = (str(peer[0]), int(peer[1]))
        refused = None
        if self._accept is not None and not self._accept(addr[0]):
            refused = "stranger_connection"
        elif self._inbound >= self.limits.max_tcp_connections:
            refused = "tcp_connections_full"
        if refused is not None:
            SIP_DROPS.add(refused)
            log.info("sip_tcp_connection_refused", peer=addr, reason=refused)
            writer.close()
            return
        self._inbound += 1
        self._writers[addr] = writer
        try:
            await self._read_loop(addr, reader, writer, idle_s=self.limits.tcp_idle_timeout_s)
        finally:
            self._inbound -= 1

    async def connect(self, dest: Address) -> None:
        if dest in self._writers:
            return
        task = self._connecting.get(dest)
        if task is None:
            task = asyncio.create_task(self._open_connection(dest))
            self._connecting[dest] = task
        try:
            await task
        finally:
            self._connecting.pop(dest, None)

    async def _open_connection(self, dest: Address) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                dest[0], dest[1], limit=2 * MAX_HEADER_BYTES
            )
        except OSError as exc:
            raise TransportError(f"cannot connect to {dest[0]}:{dest[1]}: {exc}") from exc
        self._writers[dest] = writer
        task = asyncio.create_task(self._read_loop(dest, reader, writer))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read_loop(
        self,
        addr: Address,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        idle_s: float | None = None,
    ) -> None:
        """Read messages until the peer goes; `idle_s` (inbound connections) bounds the
        wait for each message's headers, so a silent connection does not stay forever."""
        try:
            while True:
                async with asyncio.timeout(idle_s):
                    head = await reader.readuntil(b"\r\n\r\n")
                if not head.strip(b"\r\n"):
                    continue
                match = _CONTENT_LENGTH.search(head.lstrip(b"\r\n"))
                length = int(match.group(1)) if match else 0
                if length > self.limits.max_content_length:
                    SIP_DROPS.add("content_length")
                    log.warning("sip_tcp_body_too_large_closing", peer=addr, length=length)
                    return
                body = await reader.readexactly(length) if length else b""
                self._deliver(head + body, addr, stream=True)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except TimeoutError:
            SIP_DROPS.add("tcp_idle_timeout")
            log.info("sip_tcp_idle_closing", peer=addr, idle_s=idle_s)
        except (asyncio.LimitOverrunError, ValueError):
            log.warning("sip_tcp_framing_lost_closing", peer=addr, cause="oversized headers")
        finally:
            if self._writers.get(addr) is writer:
                del self._writers[addr]
            writer.close()

    def send(self, message: SipMessage, dest: Address) -> None:
        writer = self._writers.get(dest)
        if writer is None or writer.is_closing():
            raise TransportError(f"no TCP connection to {dest[0]}:{dest[1]}")
        writer.write(message.to_bytes())

    async def close(self) -> None:
        for writer in list(self._writers.values()):
            writer.close()
        self._writers.clear()
        for task in list(self._readers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
