"""Distributed mode on PostgreSQL: workers' throughput, held calls, per-call cost.

Everything runs as real processes against the PostgreSQL on 127.0.0.1:5432 (a fresh
database, dropped at the end): `callfleet serve` (API plus the leader-elected hopper,
`CALLFLEET_ENGINE=procrastinate`) and `callfleet worker` processes, with the phone
simulator's outcome rules and no media (`CALLFLEET_CARRIER=simulator-nomedia`).

Part 1, throughput. Instant outcomes (`simulator_time_scale=0`), caps raised
(`account_concurrency=5000`, `default_cps=1e6`). A batch of N due calls is inserted
through the route's own functions; the figure is calls admitted *and* finished per
second, from the commit of the batch to the last call's end, with one worker and then
with two (same API process, a fresh batch each). Printed: both rates, their ratio,
and where the CPU went (PostgreSQL, the API, the workers).

Part 2, held calls. 100,000 calls whose calling window is closed are inserted; the API
is stopped, and the hopper's admission pass is timed in this process while they
wait: the bare `hopper.admission_pass` in a transaction, and the dispatcher's whole
`admit_once` (group writer, leader fence, procrastinate enqueue). Target: under 50 ms.
Also timed: one `/metrics` collection over those rows, and one pass that admits 500
due calls while the 100,000 wait.

Part 3, per live call. Calls that last 20-60 s (`simulator_time_scale=1`), two workers
holding `--live` calls between them; each worker's RSS and CPU are sampled idle and
with every call live. Media-less: this is the dispatch side (claim, heartbeats, the
procrastinate job, the simulated carrier), not audio.

    .venv/bin/python benchmarks/bench_scale.py [--calls 5000] [--held 100000] [--live 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import sqlalchemy as sa

import _common as c
from callfleet.config import Settings
from callfleet.dispatch import hopper
from callfleet.dispatch.leader import PgLeader
from callfleet.dispatch.limits import TokenBuckets
from callfleet.dispatch.procrastinate_engine import ensure_schema, libpq_url
from callfleet.dispatch.service import Dispatcher
from callfleet.metrics import DatabaseCollector
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.store.tables import calls

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN = Path(sys.executable).parent / "callfleet"


class Bench:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.settings = Settings(data_dir=tmp, database_url=url, engine="procrastinate")
        self.db = Database(self.settings.sqlalchemy_url)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.api_port = 0
        """The port of the last API process `serve` started."""

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CALLFLEET_DATA_DIR=str(self.tmp),
            CALLFLEET_DATABASE_URL=self.url,
            CALLFLEET_ENGINE="procrastinate",
            CALLFLEET_CARRIER="simulator-nomedia",
            CALLFLEET_LOG_LEVEL="warning",
            CALLFLEET_HOPPER_INTERVAL_S="0.05",
            CALLFLEET_WORKER_SHUTDOWN_DEADLINE_S="0",
        )
        env.update(extra)
        return env

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([str(BIN), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def pg(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    def serve(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        port = c.free_port()
        proc = self.spawn(["serve", "--port", str(port)], env, "api")
        wait(lambda: self._ready(port), 90, "the API to start")
        self.api_port = port
        return proc

    def _ready(self, port: int) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def workers(self, n: int, concurrency: int, env: dict[str, str]) -> list[psutil.Process]:
        started = [
            self.spawn(["worker", "--concurrency", str(concurrency)], env, f"worker{i}")
            for i in range(n)
        ]
        for proc in started:
            pattern = f"callfleet-worker %:{proc.pid}"

            def registered(p: str = pattern) -> bool:
                query = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s"
                return bool(self.pg(query, p)[0][0])

            wait(registered, 90, "a worker to start")
        return [psutil.Process(p.pid) for p in started]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        self.procs.clear()

    def batch(self, account_id: str, numbers: list[str], **fields: Any) -> str:
        body: dict[str, Any] = {
            "base_prompt": "Hi",
            "call_data": [{"phone_number": n} for n in numbers],
            **fields,
        }
        return c.insert_batch_direct(self.db, account_id, body, self.settings).batch_id

    def ended(self, batch_id: str) -> int:
        return int(
            self.pg("SELECT count(*) FROM calls WHERE batch_id = %s AND state = 'ended'", batch_id)[
                0
            ][0]
        )

    def live(self, batch_id: str) -> int:
        query = "SELECT count(*) FROM calls WHERE batch_id = %s AND state IN ('dialing', 'live')"
        return int(self.pg(query, batch_id)[0][0])


def wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(every)


def postgres_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "username"]):
        if proc.info["name"] and proc.info["name"].startswith("postgres"):
            found.append(proc)
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def people(n: int, first: int = 0) -> list[str]:
    """Simulator numbers whose phone is a person (+1 NPA 555-0100..0139)."""
    from callfleet.domain.phones import _geographic_area_codes

    codes = sorted(_geographic_area_codes())
    out = [f"+1{code}55501{xx:02d}" for code in codes for xx in range(40)]
    return out[first : first + n]


def throughput(
    bench: Bench, account_id: str, n: int, concurrency: int, batches: int
) -> dict[int, float]:
    env = bench.env(
        CALLFLEET_SIMULATOR_TIME_SCALE="0",
        CALLFLEET_ACCOUNT_CONCURRENCY="5000",
        CALLFLEET_DEFAULT_CPS="1000000",
    )
    api = bench.serve(env)
    api_ps = psutil.Process(api.pid)
    numbers, _filler = c.phone_numbers(2 * n)
    rates: dict[int, float] = {}
    for count, chunk in ((1, numbers[:n]), (2, numbers[n:])):
        workers = bench.workers(count, concurrency, env)
        pg_procs = postgres_processes()
        before = (cpu_seconds(pg_procs), cpu_seconds([api_ps]), cpu_seconds(workers))
        began = time.monotonic()
        size = -(-n // batches)
        ids = [
            bench.batch(account_id, chunk[i : i + size], calling_window=c.OPEN_WINDOW)
            for i in range(0, n, size)
        ]
        with c.progress() as prog:
            task = prog.add_task(f"{count} worker(s): calls ended", total=n)
            while (done := sum(bench.ended(b) for b in ids)) < n:
                prog.update(task, completed=done)
                time.sleep(0.2)
        took = time.monotonic() - began
        after = (cpu_seconds(pg_procs), cpu_seconds([api_ps]), cpu_seconds(workers))
        rates[count] = n / took
        used = [b - a for a, b in zip(before, after, strict=True)]
        c.console.print(
            f"  {count} worker(s), concurrency {concurrency} each, {len(ids)} batch(es): "
            f"{n:,} calls in {took:.1f} s "
            f"= [bold]{rates[count]:,.0f} calls/s[/bold]; CPU s: PostgreSQL {used[0]:.1f}, "
            f"API {used[1]:.1f}, workers {used[2]:.1f} (wall {took:.1f} s x {os.cpu_count()} CPUs)"
        )
        per_call = 1000 * sum(used) / n
        cores = os.cpu_count() or 1
        c.console.print(
            f"    CPU per call {per_call:.1f} ms (PostgreSQL {1000 * used[0] / n:.1f}, API "
            f"{1000 * used[1] / n:.1f}, workers {1000 * used[2] / n:.1f}): all {cores} CPUs "
            f"to callfleet alone would cap this at ~{cores * 1000 / per_call:,.0f} calls/s"
        )
        for proc in bench.procs[1:]:
            bench.stop(proc)
        bench.procs[1:] = []
    bench.stop_all()
    return rates


def closed_window() -> dict[str, str]:
    """A one-hour window, in UTC, that opens six hours from now: closed now everywhere."""
    start = (datetime.now(UTC).hour + 6) % 24
    return {"start": f"{start:02d}:00", "end": f"{start + 1:02d}:00", "timezone": "UTC"}


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t))
    return out


def summary(ms: list[float]) -> str:
    ordered = sorted(ms)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {max(ms):.1f} ms"


def held(bench: Bench, account_id: str, n: int) -> dict[str, float]:
    numbers, filler = c.phone_numbers(n)
    began = time.monotonic()
    bench.batch(account_id, numbers, calling_window=closed_window())
    c.console.print(
        f"  inserted {n:,} calls held by a closed calling window in "
        f"{time.monotonic() - began:.1f} s ({filler:,} of them ordinary numbers)"
    )
    bench.pg("ANALYZE calls")
    settings = Settings(
        data_dir=bench.tmp,
        database_url=bench.url,
        engine="procrastinate",
        account_concurrency=5000,
        default_cps=1e6,
    )

    def bare_pass() -> None:
        with bench.db.write() as conn:
            admission = hopper.admission_pass(
                conn,
                datetime.now(UTC),
                default_cap=5000,
                default_cps=1e6,
                buckets=TokenBuckets(),
            )
            assert not admission.jobs

    bare = timed(bare_pass, 50)
    c.console.print(f"  bare admission_pass with {n:,} held: {summary(bare)}")

    async def dispatcher_passes() -> tuple[list[float], float]:
        leader = PgLeader(libpq_url(settings.sqlalchemy_url), "bench", interval_s=0.5)
        dispatcher = Dispatcher(bench.db, settings, SimulatedCarrier(0.0), leader=leader)
        await leader.start()
        await dispatcher.engine.open()
        dispatcher.writer.start()
        try:
            assert leader.is_leader
            out = []
            for _ in range(50):
                t = time.perf_counter()
                await dispatcher.admit_once()
                out.append(1000 * (time.perf_counter() - t))
            bench.batch(account_id, people(500), calling_window=c.OPEN_WINDOW)
            t = time.perf_counter()
            admission = await dispatcher.admit_once()
            admitting = 1000 * (time.perf_counter() - t)
            assert len(admission.jobs) == 500, len(admission.jobs)
            return out, admitting
        finally:
            dispatcher.writer.stop()
            await dispatcher.engine.shutdown(1)
            await leader.close()

    whole, admitting = asyncio.run(dispatcher_passes())
    # Those 500 were only admitted to time the pass: retire them and their jobs.
    bench.pg("DELETE FROM procrastinate_jobs")
    bench.pg("UPDATE calls SET state = 'ended', status = 'canceled' WHERE state = 'admitted'")
    c.console.print(
        f"  Dispatcher.admit_once (fence, group writer) with {n:,} held: {summary(whole)}"
    )
    c.console.print(
        f"  one pass admitting 500 due calls (and their jobs) meanwhile: {admitting:.1f} ms"
    )
    collector = DatabaseCollector(bench.db)
    scrape = timed(lambda: list(collector.collect()), 5)
    c.console.print(f"  /metrics database gauges over {n + 500:,} calls: {summary(scrape)}")
    return {
        "bare_p50": statistics.median(bare),
        "whole_p50": statistics.median(whole),
        "whole_max": max(whole),
        "admitting": admitting,
    }


def sample_live_costs(
    bench: Bench,
    batch_id: str,
    workers: list[psutil.Process],
    idle_rss: list[int],
    others: tuple[psutil.Process, ...] = (),
) -> tuple[list[float], list[float], int, list[float]]:
    """Over 10 s of live calls: each worker's RSS (KiB) and CPU (% of a core) per live
    call it holds, printed per worker; the calls in the air; and the CPU % of `others`."""
    procs = [*workers, *others]
    cpu0, t0 = [cpu_seconds([p]) for p in procs], time.monotonic()
    time.sleep(10)
    cpu1, t1 = [cpu_seconds([p]) for p in procs], time.monotonic()
    rss = [w.memory_info().rss for w in workers]
    in_air = bench.live(batch_id)
    owners = bench.pg(
        "SELECT lease_owner, count(*) FROM calls WHERE state IN ('dialing', 'live') "
        "GROUP BY lease_owner"
    )
    by_pid = {int(str(o).rsplit(":", 1)[1]): int(k) for o, k in owners}
    pct = [100 * (cpu1[i] - cpu0[i]) / (t1 - t0) for i in range(len(procs))]
    rss_per, cpu_per = [], []
    for i, w in enumerate(workers):
        mine = by_pid.get(w.pid, 0)
        extra = (rss[i] - idle_rss[i]) / 1024
        c.console.print(
            f"  worker {i + 1}: {mine} live calls; RSS {idle_rss[i] / 2**20:.0f} MiB idle -> "
            f"{rss[i] / 2**20:.0f} MiB (+{extra / max(mine, 1):.0f} KiB per live call); "
            f"CPU {pct[i]:.1f} % of a core ({pct[i] / max(mine, 1):.3f} % per live call)"
        )
        if mine:
            rss_per.append(extra / mine)
            cpu_per.append(pct[i] / mine)
    return rss_per, cpu_per, in_air, pct[len(workers) :]


def per_call(bench: Bench, account_id: str, live: int) -> tuple[float, float]:
    env = bench.env(
        CALLFLEET_SIMULATOR_TIME_SCALE="1",
        CALLFLEET_ACCOUNT_CONCURRENCY=str(live),
        CALLFLEET_DEFAULT_CPS="1000000",
    )
    bench.serve(env)
    workers = bench.workers(2, live // 2 + 10, env)
    time.sleep(3)
    idle_rss = [w.memory_info().rss for w in workers]
    batch_id = bench.batch(account_id, people(live, first=1000), calling_window=c.OPEN_WINDOW)
    wait(lambda: bench.live(batch_id) >= live * 0.95, 120, "the calls to go live", every=0.5)
    time.sleep(2)
    rss_per, cpu_per, in_air, _ = sample_live_costs(bench, batch_id, workers, idle_rss)
    c.console.print(f"  calls in the air during the sample: {in_air}")
    bench.stop_all()
    return statistics.mean(rss_per), statistics.mean(cpu_per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per throughput run")
    parser.add_argument("--concurrency", type=int, default=500, help="per worker (part 1)")
    parser.add_argument(
        "--batches",
        type=int,
        default=1,
        help="split each throughput run into this many batches (each finish updates its "
        "batch's row: one batch makes that row the workers' common lock)",
    )
    parser.add_argument("--held", type=int, default=100_000, help="held calls (part 2)")
    parser.add_argument("--live", type=int, default=400, help="live calls (part 3)")
    args = parser.parse_args()
    c.quiet_logs()
    c.header(
        "callfleet at scale: PostgreSQL, procrastinate workers",
        calls=args.calls,
        held=args.held,
        live=args.live,
    )
    name = f"callfleet_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        bench = Bench(Path(tmp), url)
        try:
            migrate(bench.db)
            ensure_schema(bench.db)
            account_id, _key = c.new_account(bench.db)
            c.console.rule("Part 1: throughput, instant outcomes, caps raised")
            rates = throughput(bench, account_id, args.calls, args.concurrency, args.batches)
            ratio = rates[2] / rates[1]
            c.console.print(
                f"  [bold]two workers / one worker = {ratio:.2f}[/bold] "
                f"(target: at least 500 calls/s with two; measured {rates[2]:,.0f})"
            )
            c.console.rule(f"Part 2: the hopper with {args.held:,} calls held")
            figures = held(bench, account_id, args.held)
            verdict = "under" if figures["whole_p50"] < 50 else "OVER"
            c.console.print(f"  [bold]admission pass {verdict} the 50 ms target[/bold]")
            c.console.rule("Part 3: per live call (media-less)")
            fresh_account, _key = c.new_account(bench.db, "per-call")
            rss_kib, cpu_pct = per_call(bench, fresh_account, args.live)
            c.console.rule("Summary")
            with bench.db.read() as conn:
                total = conn.execute(sa.select(sa.func.count()).select_from(calls)).scalar()
            c.console.print(
                f"  calls/s: one worker {rates[1]:,.0f}, two workers {rates[2]:,.0f} "
                f"(ratio {ratio:.2f})\n"
                f"  admission pass with {args.held:,} held: bare "
                f"{figures['bare_p50']:.1f} ms, admit_once {figures['whole_p50']:.1f} ms median "
                f"({figures['whole_max']:.1f} ms max); admitting 500: "
                f"{figures['admitting']:.1f} ms\n"
                f"  per live call per worker: {rss_kib:.0f} KiB RSS, {cpu_pct:.3f} % of a core\n"
                f"  rows in calls at the end: {total:,}"
            )
            c.footer()
        finally:
            bench.stop_all()
            bench.db.dispose()
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
