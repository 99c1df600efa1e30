"""One call's RTP stream: G.711 out on a 20 ms clock, in through a jitter buffer.

`RtpSession` binds an even RTP port and the RTCP port above it, and implements the
SIP layer's `MediaHandler`: `apply()` points it at the remote's SDP (again on
every re-INVITE; hold stops our sending). Frames are sent on absolute deadlines
`t0 + n * 20 ms`, so the stream never drifts and a stalled loop catches up by
skipping rather than bursting. Audio comes from an `AudioSource` (silence when
none); received audio leaves through `on_audio` once per tick, and RFC 4733
digits through `on_dtmf`. Media is accepted only from the address and port the
SDP names; the first packets from another port of the trunk's own address
(`latch_host`) latch the stream to it (symmetric RTP, for NAT). RTCP is accepted
only from the media peer. Everything else is dropped and counted in `RTP_DROPS`
(anyone could otherwise hear the call and talk into it). Media is sent only where
`media_policy` allows (a tenant's trunk may not point our RTP at the operator's
network): an SDP naming a refused address sets `refused` and `inactive`, and
nothing is sent. `inactive` is set too when nothing (RTP or RTCP) has arrived from
the peer for `inactivity_timeout_s` while the remote should be sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog

import callfleet.telephony.rtp.g711 as g711
from callfleet.telephony.rtp.drops import RTP_DROPS
from callfleet.telephony.rtp.dtmf import DtmfEvent, DtmfReceiver, key_press
from callfleet.telephony.rtp.jitter import JitterBuffer
from callfleet.telephony.rtp.packet import RtpPacket, RtpParseError
from callfleet.telephony.rtp.rtcp import ReceptionStats, build_report, parse_rtcp
from callfleet.telephony.sip.sdp import NegotiatedMedia

__all__ = ["AudioSource", "PcmSource", "RtpSession"]

log = structlog.get_logger(__name__)

FRAME_S = 0.020
SAMPLES = 160
_RESYNC_FRAMES = 10


class AudioSource(Protocol):
    def read(self) -> bytes | None:
        """The next 20 ms of 8 kHz 16-bit PCM (320 bytes), or None for silence."""
        ...


class PcmSource:
    """Plays a PCM buffer once (or forever with `loop=True`)."""

    def __init__(self, pcm: bytes, *, loop: bool = False) -> None:
        self._pcm = pcm
        self._pos = 0
        self._loop = loop

    @property
    def finished(self) -> bool:
        return not self._loop and self._pos >= len(self._pcm)

    def read(self) -> bytes | None:
        if self.finished or not self._pcm:
            return None
        frame = self._pcm[self._pos : self._pos + 2 * SAMPLES]
        self._pos += 2 * SAMPLES
        if self._loop and self._pos >= len(self._pcm):
            self._pos = 0
        return frame.ljust(2 * SAMPLES, b"\x00")


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._on_packet(data, (str(addr[0]), int(addr[1])))


class RtpSession:
    def __init__(
        self,
        host: str,
        inactivity_timeout_s: float,
        rtcp_interval_s: float,
        latch_host: str | None = None,
        media_policy: Callable[[str], str | None] | None = None,
    ) -> None:
        self.host = host
        self.latch_host = latch_host
        self.media_policy = media_policy
        """Why no media may be sent to a host the remote's SDP names (None: it may);
        None for a peer of our own (the simulator)."""
        self.refused: str | None = None
        """Set when the remote's SDP named a refused address: nothing was sent there,
        and `inactive` is set so the call ends."""
        """The trunk's own address (where the SIP dialog goes): the only host whose
        media may arrive from another port than the SDP's (symmetric RTP behind NAT).
        None: only the SDP's address and port are accepted."""
        self.local_port = 0
        self.inactivity_timeout_s = inactivity_timeout_s
        self.rtcp_interval_s = rtcp_interval_s
        self.source: AudioSource | None = None
        self.on_audio: Callable[[bytes], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.media: NegotiatedMedia | None = None
        self.inactive = asyncio.Event()
        self.ssrc = secrets.randbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self.packets_received = 0
        self.stats = ReceptionStats()
        self.jitter = JitterBuffer()
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._marker = True
        self._remote: tuple[str, int] | None = None
        self._remote_rtcp: tuple[str, int] | None = None
        self._latched = False
        self._dtmf_out: deque[DtmfEvent] = deque()
        self._dtmf_ts: int | None = None
        self._dtmf_in = DtmfReceiver()
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_rx = 0.0
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls,
        host: str = "127.0.0.1",
        *,
        port_range: tuple[int, int] = (16384, 32766),
        inactivity_timeout_s: float = 30.0,
        rtcp_interval_s: float = 5.0,
        latch_host: str | None = None,
        media_policy: Callable[[str], str | None] | None = None,
    ) -> RtpSession:
        """Bind a free even port in `port_range` for RTP and the next one for RTCP."""
        self = cls(host, inactivity_timeout_s, rtcp_interval_s, latch_host, media_policy)
        loop = asyncio.get_running_loop()
        for _ in range(200):
            port = random.randrange(port_range[0], port_range[1], 2)
            try:
                rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self._rtp_received), local_addr=(host, port)
                )
            except OSError:
                continue
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self._rtcp_received), local_addr=(host, port + 1)
                )
            except OSError:
                rtp.close()
                continue
            self._rtp, self._rtcp = rtp, rtcp
            self.local_port = port
            return self
        raise OSError(f"no free RTP port pair in {port_range}")

    # -- MediaHandler --------------------------------------------------------------

    def apply(self, media: NegotiatedMedia) -> None:
        remote = (media.remote_host, media.remote_port)
        reason = self.media_policy(media.remote_host) if self.media_policy else None
        if reason is not None:
            # Send nothing more, to there or to the address before; the call ends.
            self.refused = f"media refused: the SDP names {media.remote_host} ({reason})"
            log.warning("rtp_address_refused", host=media.remote_host, reason=reason)
            self._remote = self._remote_rtcp = None
            self.inactive.set()
            return
        self.refused = None  # a later answer (the 200 after a 183, a re-INVITE) may mend it
        moved = self.media is None or remote != (self.media.remote_host, self.media.remote_port)
        if moved or self._remote is None:
            self._remote = remote
            self._remote_rtcp = (media.remote_host, media.remote_port + 1)
            self._latched = False
        self.media = media
        self._last_rx = self._loop.time()
        self.inactive.clear()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    # -- sending -------------------------------------------------------------------

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Queue a key press; it replaces audio frames from the next tick on."""
        self._dtmf_out.extend(key_press(digit, duration_ms))

    async def _run(self) -> None:
        start = self._loop.time()
        tick = 0
        rtcp_every = max(1, round(self.rtcp_interval_s / FRAME_S))
        while True:
            tick += 1
            delay = start + tick * FRAME_S - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > _RESYNC_FRAMES * FRAME_S:
                skipped = int(-delay / FRAME_S)
                tick += skipped
                self._ts += skipped * SAMPLES
            self._tick()
            if tick % rtcp_every == 0:
                self._send_rtcp()

    def _tick(self) -> None:
        media = self.media
        if media is None:
            return
        if media.we_send:
            self._send_frame(media)
        else:
            self._ts += SAMPLES
        frame = self.jitter.pop()
        if self.on_audio is not None and self.packets_received:
            self.on_audio(g711.decode(media.codec, frame) if frame else bytes(2 * SAMPLES))
        silent = self._loop.time() - self._last_rx
        if media.we_receive and silent > self.inactivity_timeout_s and not self.inactive.is_set():
            log.info("rtp_inactivity", silent_s=round(silent, 1))
            self.inactive.set()

    def _send_frame(self, media: NegotiatedMedia) -> None:
        if self._dtmf_out and media.dtmf_payload_type is not None:
            event = self._dtmf_out.popleft()
            first = self._dtmf_ts is None
            start = self._ts if self._dtmf_ts is None else self._dtmf_ts
            self._dtmf_ts = start
            burst = [event]
            while event.end and self._dtmf_out and self._dtmf_out[0].end:
                burst.append(self._dtmf_out.popleft())
            for item in burst:
                self._send(media.dtmf_payload_type, item.to_bytes(), start, marker=first)
            if event.end:
                self._ts = start + event.duration
                self._dtmf_ts = None
            return
        self._dtmf_out.clear()
        pcm = self.source.read() if self.source is not None else None
        payload = g711.encode(media.codec, pcm) if pcm else g711.silence(media.codec)
        self._send(media.payload_type, payload, self._ts, marker=self._marker)
        self._marker = False
        self._ts += SAMPLES

    def _send(self, pt: int, payload: bytes, timestamp: int, *, marker: bool) -> None:
        if self._rtp is None or self._remote is None:
            return
        packet = RtpPacket(pt, self._seq, timestamp & 0xFFFFFFFF, self.ssrc, payload, marker)
        self._seq = (self._seq + 1) & 0xFFFF
        self._rtp.sendto(packet.to_bytes(), self._remote)
        self.packets_sent += 1
        self.octets_sent += len(payload)

    def _send_rtcp(self) -> None:
        if self._rtcp is None or self._remote_rtcp is None:
            return
        sender = (self._ts, self.packets_sent, self.octets_sent) if self.packets_sent else None
        report = build_report(
            self.ssrc,
            f"callfleet@{self.host}",
            stats=self.stats,
            sender=sender,
            now_s=self._loop.time(),
        )
        self._rtcp.sendto(report, self._remote_rtcp)

    # -- receiving -----------------------------------------------------------------

    def _rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        media = self.media
        if media is None:
            RTP_DROPS.add("before_answer")
            return
        if addr != self._remote and not self._may_latch(addr):
            RTP_DROPS.add("unexpected_source")
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            RTP_DROPS.add("malformed")
            return
        if packet.payload_type not in (media.payload_type, media.dtmf_payload_type):
            RTP_DROPS.add("payload_type")
            return
        if addr != self._remote:
            log.debug("rtp_symmetric_latch", remote=addr, sdp_remote=self._remote)
            self._remote = addr
            self._remote_rtcp = (addr[0], addr[1] + 1)
        self._latched = True
        now = self._loop.time()
        self._last_rx = now
        self.packets_received += 1
        self.stats.update(packet.ssrc, packet.sequence, packet.timestamp, now)
        if packet.payload_type == media.dtmf_payload_type:
            digit = self._dtmf_in.feed(packet.timestamp, packet.payload)
            if digit is not None and self.on_dtmf is not None:
                self.on_dtmf(digit)
        else:
            self.jitter.push(packet.sequence, packet.payload)

    def _may_latch(self, addr: tuple[str, int]) -> bool:
        """Follow a NAT-rewritten source port: only before the stream is latched, and
        only from the trunk's own address (anyone else could take the call's media)."""
        return not self._latched and self.latch_host is not None and addr[0] == self.latch_host

    def _rtcp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # RTCP only from the media peer: the port next to its RTP, or any port of the
        # trunk's own address when the peer is it (NAT rewrites both ports).
        peer_host = self._remote[0] if self._remote is not None else None
        if addr != self._remote_rtcp and not (peer_host == addr[0] == self.latch_host):
            RTP_DROPS.add("rtcp_unexpected_source")
            return
        try:
            packets = parse_rtcp(data)
        except ValueError:
            RTP_DROPS.add("malformed")
            return
        self._last_rx = self._loop.time()
        self._remote_rtcp = addr
        for packet in packets:
            if packet.ntp_middle is not None:
                self.stats.last_sr = packet.ntp_middle
                self.stats.last_sr_at = self._loop.time()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None
