"""`python -m callfleet.simulator`: run the phone simulator as a SIP trunk until Ctrl-C.

Point a trunk at the address it prints (e.g. `127.0.0.1:5080`, UDP) and dial the
test numbers `+1 NPA 555-01XX`. On exit it prints how many INVITEs and calls it saw
and the most calls it held at once.

`--invite-log PATH` appends the simulator's own record to a JSON-lines file while
it runs, so a test can check a system that dials it against what the carrier
actually received rather than against that system's database. One object a line,
told apart by `event`:

- `listening`: `host`, `port`, `transport`, `time_scale`, `max_concurrent`, `pid`;
  written first, once the socket is bound.
- `invite`: every INVITE as it arrived: `number`, `call_id` (SIP Call-ID), `cseq`,
  `branch` (top Via), `retransmission`, `in_dialog` (a re-INVITE), `challenged`
  (answered with the 407), `source`, `at` (epoch seconds), `callfleet_call` (the
  caller's `X-Callfleet-Call: <call id>;attempt=<n>`, null from other callers).
- `end`: a call over: `call_id`, `number`, `behaviour`, `status` (our final
  response), `ended_by` (`caller` or `simulator`), `received_at`, `answered_at`,
  `ended_at`, `requests` (the caller's ACK, BYE, CANCEL, ...).
- `peak`: `max_concurrent_seen` rose (`live`, `at`).
- `rejected`: `rejected_over_capacity` rose: 503s sent because of `--max-concurrent`.
- `summary`: on SIGTERM or SIGINT, after live calls are released: `invites`,
  `calls`, `max_concurrent_seen`, `rejected_over_capacity`, `final_responses`,
  `max_answer_to_end_s`.

The records are polled every 50 ms and each poll is flushed, so a reader lags the
simulator by at most that much.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from callfleet.logs import configure_logging
from callfleet.simulator import voices
from callfleet.simulator.rules import persona_for
from callfleet.simulator.sip_server import PhoneSimulator, SimulatedCall, SimulatorConfig

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
    p.add_argument(
        "--render-voices",
        action="store_true",
        help="render every persona's lines into the user's voice cache now, and exit "
        "(once per machine; make test does it first)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5080, help="SIP port (0: any free port)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies ring/talk/greeting times; 0 = fast mode for load tests",
    )
    p.add_argument(
        "--fast-hold-s",
        type=float,
        default=0.2,
        help="fast mode: seconds an answered call stays up before the phone hangs up",
    )
    p.add_argument("--username", help="challenge INVITEs with a 407 digest for this user")
    p.add_argument("--password", help="the password for --username")
    p.add_argument("--max-concurrent", type=int, help="answer 503 beyond this many live calls")
    p.add_argument("--record-dir", type=Path, help="write each voicemail message here (WAV)")
    p.add_argument("--rtp-ports", type=_port_range, default=(40000, 49999), metavar="LOW-HIGH")
    p.add_argument(
        "--invite-log",
        type=Path,
        metavar="PATH",
        help="append one JSON line per INVITE received and per call ended, and a summary on exit",
    )
    p.add_argument("--log-level", default="warning")
    return p


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


class InviteLog:
    """Writes a running `PhoneSimulator`'s records to a JSON-lines file as they grow.

    It only reads the simulator's public records (`invites`, `calls`,
    `max_concurrent_seen`, `rejected_over_capacity`), polling them, so the
    simulator needs no hook for it.
    """

    POLL_S = 0.05

    def __init__(self, sim: PhoneSimulator, out: TextIO) -> None:
        self.sim = sim
        self.out = out
        self._invites_written = 0
        self._calls_seen = 0
        self._open: dict[str, SimulatedCall] = {}
        self._peak = 0
        self._rejected = 0
        self._longest = 0.0

    def _write(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")

    def listening(self) -> None:
        host, port = self.sim.address
        cfg = self.sim.config
        self._write(
            "listening",
            host=host,
            port=port,
            transport=cfg.transport.lower(),
            time_scale=cfg.time_scale,
            max_concurrent=cfg.max_concurrent,
            pid=os.getpid(),
        )
        self.out.flush()

    def poll(self) -> None:
        """Write whatever happened since the last poll, and flush."""
        sim = self.sim
        for record in sim.invites[self._invites_written :]:
            self._write(
                "invite",
                number=record.to_number,
                call_id=record.call_id,
                cseq=record.cseq,
                branch=record.branch,
                retransmission=record.is_retransmission,
                in_dialog=record.in_dialog,
                challenged=record.challenged,
                source=f"{record.source[0]}:{record.source[1]}",
                at=_epoch(record.received_at),
                callfleet_call=record.callfleet_call,
            )
        self._invites_written = len(sim.invites)
        for call in itertools.islice(sim.calls.values(), self._calls_seen, None):
            self._open[call.call_id] = call
        self._calls_seen = len(sim.calls)
        for call_id, call in list(self._open.items()):
            if call.ended_at is not None:
                del self._open[call_id]
                self._ended(call)
        if sim.max_concurrent_seen > self._peak:
            self._peak = sim.max_concurrent_seen
            self._write("peak", live=self._peak, at=time.time())
        if sim.rejected_over_capacity > self._rejected:
            self._rejected = sim.rejected_over_capacity
            self._write("rejected", rejected_over_capacity=self._rejected)
        self.out.flush()

    def _ended(self, call: SimulatedCall) -> None:
        if call.answered_at is not None and call.ended_at is not None:
            self._longest = max(self._longest, (call.ended_at - call.answered_at).total_seconds())
        self._write(
            "end",
            call_id=call.call_id,
            number=call.number,
            behaviour=str(call.behaviour),
            status=call.final_status,
            ended_by=call.ended_by,
            received_at=_epoch(call.received_at),
            answered_at=_epoch(call.answered_at),
            ended_at=_epoch(call.ended_at),
            requests=call.requests,
        )

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.POLL_S)

    def summary(self) -> None:
        """The last line: totals, once the simulator has closed."""
        self.poll()
        sim = self.sim
        outcomes = Counter(str(c.final_status) for c in sim.calls.values())
        self._write(
            "summary",
            invites=len(sim.invites),
            calls=len(sim.calls),
            max_concurrent_seen=sim.max_concurrent_seen,
            rejected_over_capacity=sim.rejected_over_capacity,
            final_responses=dict(sorted(outcomes.items())),
            max_answer_to_end_s=round(self._longest, 3),
        )
        self.out.flush()


async def _serve(config: SimulatorConfig, invite_log: Path | None) -> PhoneSimulator:
    sim = PhoneSimulator(config)
    await sim.start()
    print(sim.describe(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as files:
        recorder: InviteLog | None = None
        poller: asyncio.Task[None] | None = None
        if invite_log is not None:
            recorder = InviteLog(sim, files.enter_context(invite_log.open("a", encoding="utf-8")))
            recorder.listening()
            poller = asyncio.create_task(recorder.run())
        try:
            await stop.wait()
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await sim.close()
            if recorder is not None:
                recorder.summary()
    return sim


def render_voices() -> None:
    """Every persona's lines, in its voice, into the caches: one Piper run per voice."""
    by_voice: dict[str, set[str]] = {}
    for xx in range(100):
        persona = persona_for(f"+1212555{100 + xx:04d}")
        by_voice.setdefault(persona.voice, set()).update(persona.texts)
    started = time.monotonic()
    for voice, texts in sorted(by_voice.items()):
        voices.render_all(sorted(texts), voice)
    lines = sum(len(texts) for texts in by_voice.values())
    print(f"{lines} lines rendered or found in {time.monotonic() - started:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.render_voices:
        render_voices()
        return 0
    try:
        config = SimulatorConfig(
            host=args.host,
            port=args.port,
            transport=args.transport,
            time_scale=args.time_scale,
            username=args.username,
            password=args.password,
            max_concurrent=args.max_concurrent,
            record_dir=args.record_dir,
            rtp_port_range=args.rtp_ports,
            fast_hold_s=args.fast_hold_s,
        )
    except ValueError as exc:
        _parser().error(str(exc))
    sim = asyncio.run(_serve(config, args.invite_log))
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
