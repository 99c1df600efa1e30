"""RTP send pacing and CPU: many `RtpSession`s in one process, 20 ms G.711 frames.

`--streams` (default 250) `RtpSession`s (callfleet.telephony.rtp.session, stock
asyncio, one pacing coroutine per session) are opened on 127.0.0.1 and pointed
(`apply()`, as the SIP layer does on answer) at loopback sinks: UDP sockets bound in
this process that are never read, so the receiving side costs this process nothing
(the kernel drops what overflows their buffers; the sender does not notice). Each
session plays a looping 440 Hz tone (`PcmSource`), so every frame is G.711-encoded
(PCMU). The sessions start spread over one 20 ms period (`--aligned`: all at once),
as calls answered at random times would, and run for `--seconds` (default 10).

Every datagram the session hands to its transport is timestamped (a thin wrapper
around the transport's `sendto`, `time.monotonic`, the clock asyncio's loop uses).
Its ideal send time is `t0 + n * 20 ms`, where `t0` is when `apply()` started the
session's stream and `n` is the frame number taken from the RTP timestamp (160
samples a frame), so frames the session skipped after a stall count as missing,
not as on time. Figures:

* **late**: the fraction of packets sent more than 20 ms after their ideal time
  (target: under 1 %), with the p50/p99/max lateness;
* **missing**: frames due in the window that were never sent;
* **CPU**: process CPU time (user + system, `resource.getrusage`) over the window /
  streams / seconds: CPU seconds per stream per second (x100 = % of one core per
  stream).

Baseline: the same with `--baseline-streams` (default 1) stream. Ratios = N streams /
baseline. The timestamp wrapper adds ~1 µs per packet to both runs.

    .venv/bin/python benchmarks/bench_rtp.py [--streams 250] [--seconds 10] [--aligned]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import math
import resource
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import _common as c
from callfleet.telephony.rtp.session import FRAME_S, PcmSource, RtpSession
from callfleet.telephony.sip.sdp import NegotiatedMedia

TARGET_LATE = 0.01
SAMPLES = 160


def tone(seconds: float = 1.0, freq: float = 440.0) -> bytes:
    n = int(8000 * seconds)
    return array.array(
        "h", (int(8000 * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n))
    ).tobytes()


class StampingTransport:
    """Wraps a session's RTP transport: records (monotonic time, RTP timestamp) per send."""

    def __init__(self, inner: Any, log: list[tuple[float, int]]) -> None:
        self._inner = inner
        self._log = log

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._log.append((time.monotonic(), struct.unpack_from("!I", data, 4)[0]))
        self._inner.sendto(data, addr)

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class Stream:
    session: RtpSession
    sends: list[tuple[float, int]] = field(default_factory=list)
    t0: float = 0.0


@dataclass
class RunResult:
    streams: int
    seconds: float
    cpu_s: float
    packets: int
    due: int
    lateness: list[float]

    @property
    def late_fraction(self) -> float:
        return sum(x > FRAME_S for x in self.lateness) / max(1, len(self.lateness))

    @property
    def cpu_per_stream_s(self) -> float:
        return self.cpu_s / self.streams / self.seconds


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run(n: int, seconds: float, aligned: bool) -> RunResult:
    loop = asyncio.get_running_loop()
    sinks = []
    for _ in range(max(1, min(16, n // 16))):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        sinks.append(sock)
    pcm = tone()
    streams: list[Stream] = []
    try:
        for _ in range(n):
            session = await RtpSession.open(
                "127.0.0.1", inactivity_timeout_s=3600.0, rtcp_interval_s=5.0
            )
            session.source = PcmSource(pcm, loop=True)
            stream = Stream(session)
            session._rtp = StampingTransport(session._rtp, stream.sends)  # type: ignore[assignment]
            streams.append(stream)
        gc.collect()
        gc.freeze()  # the sessions live for the whole run; keep gc passes cheap and fair

        def start(stream: Stream, sink: socket.socket) -> None:
            port = sink.getsockname()[1]
            stream.t0 = time.monotonic()
            stream.session.apply(NegotiatedMedia("127.0.0.1", port, 0, "PCMU", 101, "sendrecv"))

        base = loop.time() + 0.05
        for i, stream in enumerate(streams):
            at = base if aligned else base + (i % 20) * FRAME_S / 20 + (i // 20) * 1e-5
            loop.call_at(at, start, stream, sinks[i % len(sinks)])
        warmup = 1.0  # the first second (start-up) is not measured
        await asyncio.sleep(0.05 + FRAME_S + warmup)
        win_start = time.monotonic()
        cpu0 = cpu_now()
        await asyncio.sleep(seconds)
        cpu = cpu_now() - cpu0
        win_end = time.monotonic()
    finally:
        for stream in streams:
            await stream.session.close()
        for sock in sinks:
            sock.close()
        gc.unfreeze()

    lateness: list[float] = []
    packets = 0
    due = 0
    for stream in streams:
        if not stream.sends:
            continue
        ts0 = stream.sends[0][1]
        for sent_at, ts in stream.sends:
            frame = ((ts - ts0) & 0xFFFFFFFF) // SAMPLES + 1
            ideal = stream.t0 + frame * FRAME_S
            if win_start <= ideal < win_end:
                lateness.append(sent_at - ideal)
                packets += 1
        first = math.ceil((win_start - stream.t0) / FRAME_S)
        last = math.ceil((win_end - stream.t0) / FRAME_S) - 1
        due += max(0, last - first + 1)
    return RunResult(n, win_end - win_start, cpu, packets, due, lateness)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def describe(r: RunResult) -> list[tuple[str, str]]:
    missing = max(0, r.due - r.packets)
    # Laid out by hand (fmt: skip): a table, one (label, figure) row per line.
    return [
        ("packets", f"{r.packets:,} sent in the window, {missing:,} of {r.due:,} due missing "
                    f"({missing / max(1, r.due) * 100:.2f} %)"),
        ("late > 20 ms", f"{r.late_fraction * 100:.3f} % "
                         f"({sum(x > FRAME_S for x in r.lateness):,} packets)"),
        ("lateness", f"p50 {statistics.median(r.lateness) * 1000:.2f} ms, "
                     f"p99 {pct(r.lateness, 0.99) * 1000:.2f} ms, "
                     f"max {max(r.lateness) * 1000:.2f} ms"),
        ("CPU", f"{r.cpu_s:.2f} s in {r.seconds:.1f} s"
                f" = {r.cpu_s / r.seconds * 100:.1f} % of one core;"
                f" {r.cpu_per_stream_s * 1000:.3f} ms CPU per stream per second"
                f" ({r.cpu_per_stream_s * 100:.3f} % of a core per stream)"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=250)
    parser.add_argument("--baseline-streams", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="start every stream at the same instant (one burst per tick)",
    )
    args = parser.parse_args()
    c.quiet_logs()
    c.header(
        "bench_rtp: concurrent RtpSession streams, 20 ms PCMU to loopback sinks",
        streams=args.streams,
        seconds=args.seconds,
        starts="aligned" if args.aligned else "spread over 20 ms",
    )

    base = asyncio.run(run(args.baseline_streams, args.seconds, args.aligned))
    c.figures(f"baseline: {base.streams} stream(s)", describe(base))
    many = asyncio.run(run(args.streams, args.seconds, args.aligned))
    c.figures(f"{many.streams} streams", describe(many))
    # Laid out by hand (fmt: skip): a table, one (label, figure) row per line.
    c.figures("ratios to the baseline", [
        ("late fraction", f"{many.late_fraction * 100:.3f} % vs {base.late_fraction * 100:.3f} %"
                          f" (target < {TARGET_LATE * 100:.0f} %:"
                          f" {'met' if many.late_fraction < TARGET_LATE else 'NOT met'})"),
        ("p99 lateness", f"{pct(many.lateness, 0.99) / max(1e-6, pct(base.lateness, 0.99)):.1f}x"),
        ("CPU per stream per second", f"{many.cpu_per_stream_s / base.cpu_per_stream_s:.2f}x"),
        ("streams per core (CPU only)",
         f"~{1 / many.cpu_per_stream_s:.0f} at this per-stream cost"),
    ])  # fmt: skip
    c.footer()


if __name__ == "__main__":
    main()
