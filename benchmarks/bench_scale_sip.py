"""Distributed mode over real SIP: one worker against two, peak calls, per-call cost.

Real processes against the PostgreSQL on 127.0.0.1:5432 (a fresh database, dropped at
the end): `callfleet serve` (API plus the leader-elected hopper, procrastinate
engine), `callfleet worker` processes placing SIP calls with RTP
(`CALLFLEET_CARRIER=sip`, the AI agent off: the line carries silence), and
`callfleet simulator` as the account's trunk, in its fast mode (`--time-scale 0`:
people answer at once, stay up `--hold-s`, then hang up), refusing with 503 beyond
the account's cap, and writing its own record of every INVITE and call end
(`--invite-log`). Peaks, answer-to-end times and "one SIP call a number" come from
that record, not from our database.

Part 1, throughput. A batch of `--calls` people's numbers, the account capped at
`--cap` calls in flight, first with one worker (`--concurrency` = the cap), then a
fresh batch with two. The figure is calls finished per second from the commit of
the batch to the last call's end; two workers are printed as a ratio against the
one-worker baseline of the same run. Also: the simulator's peak of concurrent calls
(never above the cap), the slowest answer-to-end it saw (the fast mode holds
`--hold-s`; seconds more mean a SIP message was lost and a retransmission timer
repaired it), INVITE retransmissions, the kernel's UDP receive-buffer drops
(`/proc/net/snmp` RcvbufErrors) during the run, and CPU per call by process kind.

Part 2, per live call. A second simulator whose calls stay up `--live-hold-s`, a
second account capped at `--live`, two workers holding those calls between them;
each worker's RSS and CPU are sampled idle and with every call live, and divided
by its live calls. This is the whole SIP call: dispatch, SIP dialog, RTP silence
both ways (50 packets a second each way per call). Then the batch is stopped, so our
side sends a BYE for every live call at once: printed, how long until all had ended
in our database and at the phones, and the UDP receive-buffer drops during part 2.

    .venv/bin/python benchmarks/bench_scale_sip.py [--calls 5000] [--cap 200] [--live 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

import _common as c
from bench_scale import (
    ADMIN,
    Bench,
    cpu_seconds,
    people,
    postgres_processes,
    sample_live_costs,
    wait,
)
from callfleet.dispatch.procrastinate_engine import ensure_schema
from callfleet.store.migrate import migrate

SLOW_S = 5.0


@dataclass
class PhoneLog:
    """The simulator's `--invite-log`, read so far."""

    port: int
    invites: list[dict[str, Any]] = field(default_factory=list)
    ends: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak: int = 0
    rejected: int = 0

    @classmethod
    def read(cls, path: Path) -> PhoneLog:
        out = cls(port=0)
        for line in path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            entry = json.loads(line)
            event = entry["event"]
            if event == "listening":
                out.port = int(entry["port"])
            elif event == "invite":
                out.invites.append(entry)
            elif event == "end":
                out.ends[entry["call_id"]] = entry
            elif event == "peak":
                out.peak = max(out.peak, entry["live"])
            elif event == "rejected":
                out.rejected = entry["rejected_over_capacity"]
        return out

    def for_numbers(self, numbers: set[str]) -> tuple[dict[str, set[str]], int]:
        """(number -> distinct SIP Call-IDs, INVITE retransmissions) for these numbers."""
        by_number: dict[str, set[str]] = {}
        retransmitted = 0
        for invite in self.invites:
            if invite["number"] in numbers and not invite["in_dialog"]:
                by_number.setdefault(invite["number"], set()).add(invite["call_id"])
                retransmitted += bool(invite["retransmission"])
        return by_number, retransmitted


def peak_of(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = [ln for ln in lines if ln[0] == "Udp:"][:2]
    return int(values[names.index("RcvbufErrors")])


def udp_socket_drops(pid: int) -> dict[int, int]:
    """Local port -> datagrams dropped for a full receive buffer, for each UDP socket the
    process holds now (`/proc/net/udp`; a closed socket's count is gone with it)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out: dict[int, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[9] in inodes:
            out[int(cols[1].rsplit(":", 1)[1], 16)] = int(cols[12])
    return out


def sip_drops(procs: dict[str, tuple[int, int]]) -> str:
    """Drops on each process's SIP socket, and on its other (RTP, RTCP) sockets, as
    `name SIP/RTP`. `procs`: name -> (pid, SIP port, or 0: the one outside the RTP range)."""
    parts = []
    for name, (pid, sip_port) in procs.items():
        try:
            drops = udp_socket_drops(pid)
        except OSError:
            continue
        if not sip_port:  # a worker: its SIP socket is the one outside its RTP range
            sip_port = next((p for p in drops if not 16384 <= p <= 32767), 0)
        sip = drops.get(sip_port, 0)
        parts.append(f"{name} {sip}/{sum(drops.values()) - sip}")
    return ", ".join(parts)


class SipBench(Bench):
    def simulator(self, name: str, cap: int, hold_s: float) -> tuple[psutil.Process, Path]:
        log = self.tmp / f"{name}.jsonl"
        # Laid out by hand (fmt: skip): each flag beside its value.
        proc = self.spawn(
            ["simulator", "--port", "0", "--time-scale", "0", "--fast-hold-s", str(hold_s),
             "--max-concurrent", str(cap), "--invite-log", str(log),
             "--rtp-ports", "40000-59999"],
            dict(os.environ), name,
        )  # fmt: skip
        wait(lambda: log.exists() and PhoneLog.read(log).port > 0, 60, "the simulator")
        return psutil.Process(proc.pid), log

    def trunk(self, key: str, port: int) -> None:
        body = {
            "name": f"simulator-{port}",
            "host": "127.0.0.1",
            "port": port,
            "transport": "udp",
            "cps": 1000,
            "default": True,
        }
        resp = httpx.post(
            f"http://127.0.0.1:{self.api_port}/v1/trunks",
            headers={"authorization": key},
            json=body,
            timeout=30,
        )
        resp.raise_for_status()


def sip_env(bench: Bench, cap: int) -> dict[str, str]:
    return bench.env(
        CALLFLEET_CARRIER="sip",
        CALLFLEET_AGENT_ENABLED="false",
        CALLFLEET_ACCOUNT_CONCURRENCY=str(cap),
        CALLFLEET_DEFAULT_CPS="1000",
        CALLFLEET_TRUNK_ALLOW="127.0.0.0/8",  # the simulators the trunks point at
    )


@dataclass
class Run:
    workers: int
    calls: int
    seconds: float
    rate: float
    sim_peak: int
    slowest_s: float
    slow: int
    db_slowest_s: float
    retransmitted: int
    dropped: int
    redialled: int
    cpu_ms: dict[str, float]


def throughput(
    bench: SipBench, account: tuple[str, str], n: int, cap: int, hold_s: float
) -> list[Run]:
    account_id, key = account
    env = sip_env(bench, cap)
    sim_ps, log = bench.simulator("phones", cap, hold_s)
    api = bench.serve(env)
    bench.trunk(key, PhoneLog.read(log).port)
    api_ps = psutil.Process(api.pid)
    runs = []
    for count in (1, 2):
        numbers = people(n, first=(count - 1) * n)
        workers = bench.workers(count, cap, env)
        kinds = {
            "PostgreSQL": postgres_processes(),
            "API": [api_ps],
            "workers": workers,
            "simulator": [sim_ps],
        }
        before = {k: cpu_seconds(v) for k, v in kinds.items()}
        drops = udp_rcvbuf_errors()
        began = time.monotonic()
        batch_id = bench.batch(account_id, numbers, calling_window=c.OPEN_WINDOW)
        with c.progress() as prog:
            task = prog.add_task(f"{count} worker(s): calls ended", total=n)
            while (done := bench.ended(batch_id)) < n:
                prog.update(task, completed=done)
                time.sleep(0.2)
        took = time.monotonic() - began
        dropped = udp_rcvbuf_errors() - drops
        sockets = sip_drops(
            {
                "simulator": (sim_ps.pid, PhoneLog.read(log).port),
                **{f"worker {i + 1}": (w.pid, 0) for i, w in enumerate(workers)},
            }
        )
        used = {k: cpu_seconds(v) - before[k] for k, v in kinds.items()}
        time.sleep(0.3)  # the simulator writes its record every 50 ms
        record = PhoneLog.read(log)
        by_number, retransmitted = record.for_numbers(set(numbers))
        mine = {cid for ids in by_number.values() for cid in ids}
        ends = [record.ends[cid] for cid in mine if cid in record.ends]
        durations = [e["ended_at"] - e["answered_at"] for e in ends if e["answered_at"]]
        ours = bench.pg(
            "SELECT coalesce(max(extract(epoch FROM ended_at - answered_at)), 0) FROM calls "
            "WHERE batch_id = %s AND answered_at IS NOT NULL",
            batch_id,
        )[0][0]
        run = Run(
            workers=count,
            calls=n,
            seconds=took,
            rate=n / took,
            sim_peak=peak_of([(e["received_at"], e["ended_at"]) for e in ends]),
            slowest_s=max(durations, default=0.0),
            slow=sum(1 for d in durations if d > SLOW_S),
            db_slowest_s=float(ours),
            retransmitted=retransmitted,
            dropped=dropped,
            redialled=sum(1 for ids in by_number.values() if len(ids) > 1),
            cpu_ms={k: 1000 * v / n for k, v in used.items()},
        )
        runs.append(run)
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.cpu_ms.items())
        c.console.print(
            f"  {count} worker(s): {n:,} calls in {took:.1f} s = [bold]{run.rate:,.1f} "
            f"calls/s[/bold]; simulator peak {run.sim_peak} (cap {cap}, 503s so far "
            f"{record.rejected}); answer-to-end max {run.slowest_s:.2f} s at the phones "
            f"({run.slow} over {SLOW_S:g} s), {run.db_slowest_s:.2f} s in our database; "
            f"INVITE retransmissions {retransmitted}; numbers with more than one SIP call "
            f"{run.redialled}; UDP receive-buffer drops {dropped} (SIP/other sockets still "
            f"open: {sockets})\n"
            f"    CPU ms per call: {cpu} (total {sum(run.cpu_ms.values()):.1f})"
        )
        for proc in bench.procs[2:]:  # the workers; the simulator and the API stay
            bench.stop(proc)
        bench.procs[2:] = []
    bench.stop_all()
    return runs


def per_call(
    bench: SipBench, account: tuple[str, str], live: int, hold_s: float
) -> tuple[float, float, float]:
    account_id, key = account
    env = sip_env(bench, live)
    sim_ps, log = bench.simulator("phones-held", live, hold_s)
    bench.serve(env)
    bench.trunk(key, PhoneLog.read(log).port)
    workers = bench.workers(2, live // 2 + 10, env)
    time.sleep(3)
    drops = udp_rcvbuf_errors()
    idle_rss = [w.memory_info().rss for w in workers]
    numbers = people(live, first=len(people(10**6)) - live)
    batch_id = bench.batch(account_id, numbers, calling_window=c.OPEN_WINDOW)
    wait(lambda: bench.live(batch_id) >= live * 0.95, 120, "the calls to go live", every=0.5)
    time.sleep(2)
    rss_per, cpu_per, in_air, (sim_pct,) = sample_live_costs(
        bench, batch_id, workers, idle_rss, others=(sim_ps,)
    )
    c.console.print(
        f"  calls in the air during the sample: {in_air}; the simulator (the far end of "
        f"every call) used {sim_pct:.1f} % of a core"
    )
    hang_up_all(bench, key, batch_id, log)
    sockets = sip_drops(
        {
            "simulator": (sim_ps.pid, PhoneLog.read(log).port),
            **{f"worker {i + 1}": (w.pid, 0) for i, w in enumerate(workers)},
        }
    )
    c.console.print(
        f"  UDP receive-buffer drops during part 2: {udp_rcvbuf_errors() - drops} "
        f"(SIP/other sockets still open: {sockets})"
    )
    bench.stop_all()
    return statistics.mean(rss_per), statistics.mean(cpu_per), sim_pct / max(in_air, 1)


def hang_up_all(bench: SipBench, key: str, batch_id: str, log: Path) -> None:
    """Stop the batch: our side sends a BYE for every live call at once, the burst
    that once left some BYEs unanswered for ~32 s (Timer F)."""
    began, wall = time.monotonic(), time.time()
    resp = httpx.post(
        f"http://127.0.0.1:{bench.api_port}/v1/batches/{batch_id}/stop",
        headers={"authorization": key},
        timeout=30,
    )
    resp.raise_for_status()
    wait(lambda: bench.live(batch_id) == 0, 120, "the calls to end", every=0.1)
    took = time.monotonic() - began
    time.sleep(0.3)
    ends = [e for e in PhoneLog.read(log).ends.values() if e["ended_by"] == "caller"]
    at_phones = max((e["ended_at"] - wall for e in ends), default=0.0)
    c.console.print(
        f"  stopping the batch hung up every live call in {took:.2f} s (our database); "
        f"the last BYE reached the phones {at_phones:.2f} s after the stop ({len(ends)} BYEs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per throughput run")
    parser.add_argument("--cap", type=int, default=200, help="the account's calls in flight")
    parser.add_argument("--hold-s", type=float, default=0.2, help="answered calls last (part 1)")
    parser.add_argument("--live", type=int, default=200, help="live calls (part 2)")
    parser.add_argument("--live-hold-s", type=float, default=60.0, help="their length")
    parser.add_argument("--skip-live", action="store_true", help="part 1 only")
    parser.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="copy the processes' logs and the simulators' invite logs here at the end",
    )
    args = parser.parse_args()
    c.quiet_logs()
    c.header(
        "callfleet at scale over SIP: procrastinate workers -> callfleet simulator",
        calls=args.calls,
        cap=args.cap,
        hold_s=args.hold_s,
        live=args.live,
    )
    name = f"callfleet_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with tempfile.TemporaryDirectory(prefix="bench-scale-sip-") as tmp:
        bench = SipBench(Path(tmp), url)
        try:
            migrate(bench.db)
            ensure_schema(bench.db)
            c.console.rule("Part 1: throughput over SIP, one worker then two")
            runs = throughput(bench, c.new_account(bench.db), args.calls, args.cap, args.hold_s)
            one, two = runs
            rss_kib = cpu_pct = sim_pct = float("nan")
            if not args.skip_live:
                c.console.rule("Part 2: per live SIP call")
                rss_kib, cpu_pct, sim_pct = per_call(
                    bench, c.new_account(bench.db, "per-call"), args.live, args.live_hold_s
                )
            c.console.rule("Summary")
            c.console.print(
                f"  calls/s over SIP: one worker {one.rate:,.1f} (baseline = 1.00), two "
                f"workers {two.rate:,.1f} = [bold]{two.rate / one.rate:.2f}[/bold]x\n"
                f"  simulator's peak concurrent calls: {one.sim_peak} and {two.sim_peak} "
                f"(cap {args.cap})\n"
                f"  slowest answer-to-end (fast mode holds {args.hold_s:g} s): "
                f"{one.slowest_s:.2f} s and {two.slowest_s:.2f} s at the phones, "
                f"{one.db_slowest_s:.2f} s and {two.db_slowest_s:.2f} s in our database; "
                f"over {SLOW_S:g} s at the phones: "
                f"{one.slow} and {two.slow}; UDP receive-buffer drops: {one.dropped} and "
                f"{two.dropped}\n"
                f"  CPU ms per call, all processes: {sum(one.cpu_ms.values()):.1f} and "
                f"{sum(two.cpu_ms.values()):.1f}\n"
                f"  per live call per worker: {rss_kib:.0f} KiB RSS, {cpu_pct:.3f} % of a core "
                f"(the simulator: {sim_pct:.3f} % of a core per call)"
            )
            c.footer()
        finally:
            bench.stop_all()
            if args.keep_logs is not None:
                shutil.copytree(tmp, args.keep_logs, dirs_exist_ok=True)
            bench.db.dispose()
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
