"""`python -m callfleet.simulator`: run the phone simulator as a SIP trunk until Ctrl-C.

Point a trunk at the address it prints (e.g. `127.0.0.1:5080`, UDP) and dial the
test numbers `+1 NPA 555-01XX`. On exit it prints how many INVITEs and calls it saw
and the most calls it held at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections import Counter
from pathlib import Path

from callfleet.simulator.sip_server import PhoneSimulator, SimulatorConfig

__all__ = ["main"]


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError("expected LOW-HIGH, e.g. 40000-49999") from None
    if not 1024 <= first < last <= 65535:
        raise argparse.ArgumentTypeError("expected 1024 <= LOW < HIGH <= 65535")
    return first, last


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callfleet simulator",
        description="A simulated carrier: a SIP server whose test numbers +1 NPA 555-01XX "
        "answer, ring out, are busy, decline or play a voicemail greeting and beep.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5080, help="SIP port (0: any free port)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument(
        "--time-scale", type=float, default=1.0,
        help="multiplies ring/talk/greeting times; 0 = fast mode for load tests",
    )  # fmt: skip
    p.add_argument(
        "--fast-hold-s", type=float, default=0.2,
        help="fast mode: seconds an answered call stays up before the phone hangs up",
    )  # fmt: skip
    p.add_argument("--username", help="challenge INVITEs with a 407 digest for this user")
    p.add_argument("--password", help="the password for --username")
    p.add_argument("--max-concurrent", type=int, help="answer 503 beyond this many live calls")
    p.add_argument("--record-dir", type=Path, help="write each voicemail message here (WAV)")
    p.add_argument("--rtp-ports", type=_port_range, default=(40000, 49999), metavar="LOW-HIGH")
    p.add_argument("--log-level", default="warning")
    return p


async def _serve(config: SimulatorConfig) -> PhoneSimulator:
    sim = PhoneSimulator(config)
    await sim.start()
    print(sim.describe(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.close()
    return sim


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    try:
        config = SimulatorConfig(
            host=args.host, port=args.port, transport=args.transport,
            time_scale=args.time_scale, username=args.username, password=args.password,
            max_concurrent=args.max_concurrent, record_dir=args.record_dir,
            rtp_port_range=args.rtp_ports, fast_hold_s=args.fast_hold_s,
        )  # fmt: skip
    except ValueError as exc:
        _parser().error(str(exc))
    sim = asyncio.run(_serve(config))
    outcomes = Counter(str(c.final_status) for c in sim.calls.values())
    print(
        f"{len(sim.invites)} INVITEs, {len(sim.calls)} calls, at most "
        f"{sim.max_concurrent_seen} at once, {sim.rejected_over_capacity} over capacity; "
        f"final responses: {dict(sorted(outcomes.items()))}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
