"""The embedded dispatcher on SQLite: throughput with instant calls, and the concurrency cap.

Part 1, throughput. N calls (default 20,000) are queued through the route's own
functions (calling window 00:00-24:00, so every call is due), then a `Dispatcher`
(`callfleet.dispatch.service`) with the simulator's instant outcomes
(`simulator_time_scale=0`), `account_concurrency=2000` and `default_cps=100000` runs
until every call has ended. Figure: calls admitted-and-finished per second.

Baseline, on a byte-for-byte copy of the same database: for every call, the two
conditional single-row UPDATEs a call needs at the least (claim: queued -> dialing
with a lease; finish: dialing -> ended with its outcome), keyed by primary key and
run through SQLAlchemy Core one statement at a time, committed in groups of 500 calls
(the GroupWriter's group size). No SELECTs, SAVEPOINTs, attempt rows, batch counters
or asyncio: the floor under the dispatcher's SQL. For reference also N bare single-row
UPDATEs in one transaction.

Part 2, the cap. Default cap (`account_concurrency=10`), pacing lifted
(`default_cps=100000`, so the cap and not calls-per-second is what binds), a carrier
whose every call rings, is answered and lasts ~50 ms. A sampler thread counts calls in
states admitted/dialing/live in the database every few milliseconds, and the event loop
samples the calls on the carrier; the maximum must never exceed the cap (this is the
one pass/fail: exit status 1 if it does).

    .venv/bin/python benchmarks/bench_dispatch.py [--rows N] [--cap-rows M] [--call-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import _common as c
from callfleet.config import Settings
from callfleet.dispatch import hopper, lifecycle
from callfleet.dispatch.lifecycle import ACTIVE_STATES
from callfleet.dispatch.service import Dispatcher
from callfleet.dispatch.writer import GroupWriter
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.db import Database
from callfleet.store.tables import batches, calls
from callfleet.telephony.carrier import (
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
)


class FixedCarrier:
    """Every call rings, is answered at once and lasts `call_s` (or until hung up)."""

    def __init__(self, call_s: float) -> None:
        self.call_s = call_s
        self.on_carrier = 0
        self.max_on_carrier = 0

    def describe(self) -> str:
        return f"benchmark carrier: every call answered, {self.call_s * 1000:g} ms long"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.on_carrier += 1
        self.max_on_carrier = max(self.max_on_carrier, self.on_carrier)
        try:
            await events.ringing()
            answered = datetime.now(UTC)
            await events.answered()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(request.hangup.wait(), self.call_s)
            return DialResult(
                Outcome.COMPLETED,
                answered_at=answered,
                ended_at=datetime.now(UTC),
                ended_by=EndedBy.USER,
                sip_code=200,
                endpoint="benchmark://fixed",
            )
        finally:
            self.on_carrier -= 1


class WriterStats:
    """Counts the GroupWriter's transactions and its thread's busy time (instance patch).

    With `profile`, the writer thread's groups are also run under that cProfile.
    """

    def __init__(self, writer: GroupWriter, profile: cProfile.Profile | None = None) -> None:
        self.groups = 0
        self.ops = 0
        self.busy = 0.0
        self.sizes: list[int] = []
        original = writer._run_group

        def counted(group: list[Any]) -> None:
            t = time.perf_counter()
            if profile is not None:
                profile.enable()
            try:
                original(group)
            finally:
                if profile is not None:
                    profile.disable()
                self.busy += time.perf_counter() - t
                self.groups += 1
                self.ops += len(group)
                self.sizes.append(len(group))

        writer._run_group = counted  # type: ignore[method-assign]


# What the writer thread runs: `runner.py` and `service.py` call these through their
# modules, so CallTimer's replacement of the module attributes times every run.
OP_TARGETS = (
    (lifecycle, "claim"),
    (lifecycle, "mark_answered"),
    (lifecycle, "finish"),
    (lifecycle, "heartbeat"),
    (hopper, "admission_pass"),
    (hopper, "reap"),
)


class SqlTimer:
    """DB-API time and count per SQL statement (engine events), grouped by statement text.

    Counts only what the GroupWriter's thread runs (not the samplers' or progress reads).
    """

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        self.seconds: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def _before(self, conn: Any, _cursor: Any, _stmt: str, *_: Any) -> None:
        conn.info["bench_t"] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name != "callfleet-writer":
            return
        key = " ".join(statement.split())
        if key.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            key = key.rsplit("_", 1)[0] + "_N"
        self.seconds[key] += time.perf_counter() - conn.info.pop("bench_t", time.perf_counter())
        self.counts[key] += 1

    def __enter__(self) -> SqlTimer:
        sa.event.listen(self.engine, "before_cursor_execute", self._before)
        sa.event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "after_cursor_execute", self._after)

    def print(self, n_calls: int, busy: float, limit: int = 18) -> None:
        total = sum(self.seconds.values())
        count = sum(self.counts.values())
        c.console.rule("SQL run by the dispatcher (DB-API cursor time, engine events)")
        c.console.print(
            f"  {count:,} statements ({count / n_calls:.1f} per call), {total:.2f} s inside "
            f"sqlite3 = {100 * total / busy:.0f} % of the writer's busy time "
            f"({1e6 * total / n_calls:,.0f} us per call); the rest is Python"
        )
        for key in sorted(self.seconds, key=self.seconds.__getitem__, reverse=True)[:limit]:
            sec, cnt = self.seconds[key], self.counts[key]
            c.console.print(
                f"  {sec:6.2f} s {cnt:7,} x {1e6 * sec / cnt:6.0f} us  {key[:78]}", soft_wrap=True
            )


class ActiveSampler(threading.Thread):
    """Counts calls in ACTIVE_STATES every `interval` s on its own read connection."""

    def __init__(self, db: Database, interval: float) -> None:
        super().__init__(daemon=True, name="active-sampler")
        self.db = db
        self.interval = interval
        self.samples: list[int] = []
        self.stop_event = threading.Event()
        self.query = sa.select(sa.func.count()).where(calls.c.state.in_(ACTIVE_STATES))

    def run(self) -> None:
        while not self.stop_event.is_set():
            with self.db.read() as conn:
                self.samples.append(int(conn.execute(self.query).scalar() or 0))
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def queue_calls(path: Path, n: int, **overrides: Any) -> tuple[Settings, Database, str]:
    settings = c.sqlite_settings(path, **overrides)
    db = c.fresh_database(settings)
    account_id, _key = c.new_account(db)
    rows, filler = c.make_rows(n)
    if filler:
        c.console.print(
            f"  note: {filler:,} of the numbers are outside the simulator range "
            "(they fail at once with 404)"
        )
    accepted = c.insert_batch_direct(db, account_id, c.batch_body(rows, open_window=True), settings)
    if accepted.schedule["waiting"]:
        raise SystemExit("some calls are not due: the open calling window was not applied")
    return settings, db, accepted.batch_id


async def run_dispatcher(
    db: Database,
    settings: Settings,
    carrier: Any,
    batch_id: str,
    total: int,
    label: str,
    timeout_s: float,
    loop_sample_s: float = 0.0,
    profile: bool = False,
) -> tuple[float, WriterStats, list[int], list[pstats.Stats]]:
    """Start a Dispatcher, wait until the batch has no call left, stop it."""

    def remaining() -> int:
        with db.read() as conn:
            return int(
                conn.execute(
                    sa.select(batches.c.remaining).where(batches.c.id == batch_id)
                ).scalar_one()
            )

    dispatcher = Dispatcher(db, settings, carrier)
    writer_prof = cProfile.Profile() if profile else None
    loop_prof = cProfile.Profile() if profile else None
    stats = WriterStats(dispatcher.writer, writer_prof)
    live_samples: list[int] = []
    done = asyncio.Event()

    async def sample_live() -> None:
        while not done.is_set():
            live_samples.append(len(dispatcher.runner.live))
            await asyncio.sleep(loop_sample_s)

    sampler = asyncio.create_task(sample_live()) if loop_sample_s > 0 else None
    with c.progress() as prog:
        task = prog.add_task(label, total=total)
        t0 = time.perf_counter()
        if loop_prof is not None:
            loop_prof.enable()
        await dispatcher.start()
        dispatcher.wake()
        deadline = t0 + timeout_s
        while True:
            left = await asyncio.to_thread(remaining)
            prog.update(task, completed=total - left)
            if left == 0:
                break
            if time.perf_counter() > deadline:
                raise SystemExit(f"{left:,} calls still not ended after {timeout_s:g} s")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        if loop_prof is not None:
            loop_prof.disable()
    done.set()
    if sampler is not None:
        await sampler
    await dispatcher.stop()
    profiles = [pstats.Stats(p) for p in (writer_prof, loop_prof) if p is not None]
    return elapsed, stats, live_samples, profiles


def outcome_counts(db: Database, batch_id: str) -> Counter[str]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(calls.c.state, calls.c.status, sa.func.count())
            .where(calls.c.batch_id == batch_id)
            .group_by(calls.c.state, calls.c.status)
        ).all()
    return Counter({f"{state}/{status}": n for state, status, n in rows})


def baseline_pairs(path: Path, group: int) -> tuple[float, int]:
    """Claim+finish UPDATE pairs by primary key, `group` calls a transaction."""
    db = Database(f"sqlite:///{path}")
    with db.read() as conn:
        ids = [
            (r.id, r.attempt)
            for r in conn.execute(
                sa.select(calls.c.id, calls.c.attempt)
                .where(calls.c.state == "queued")
                .order_by(calls.c.not_before, calls.c.seq)
            )
        ]
    claim = (
        sa.update(calls)
        .where(
            calls.c.id == sa.bindparam("cid"),
            calls.c.attempt == sa.bindparam("att"),
            calls.c.state == "queued",
        )
        .values(
            state="dialing",
            queue_status="started",
            lease_owner=sa.bindparam("owner"),
            lease_until=sa.bindparam("until"),
            started_at=sa.bindparam("now"),
        )
    )
    finish = (
        sa.update(calls)
        .where(
            calls.c.id == sa.bindparam("cid"),
            calls.c.attempt == sa.bindparam("att"),
            calls.c.state == "dialing",
        )
        .values(
            state="ended",
            queue_status="complete",
            status="completed",
            ended_at=sa.bindparam("now"),
            call_length=0.0,
            lease_owner=None,
            lease_until=None,
        )
    )
    t = time.perf_counter()
    changed = 0
    for start in range(0, len(ids), group):
        with db.write() as conn:
            for cid, att in ids[start : start + group]:
                now = datetime.now(UTC)
                changed += conn.execute(
                    claim,
                    {
                        "cid": cid,
                        "att": att,
                        "owner": "bench",
                        "now": now,
                        "until": now + timedelta(seconds=30),
                    },
                ).rowcount
                changed += conn.execute(finish, {"cid": cid, "att": att, "now": now}).rowcount
    elapsed = time.perf_counter() - t
    db.dispose()
    return elapsed, changed


def baseline_single_updates(path: Path) -> float:
    """N bare single-row UPDATEs by primary key in one transaction."""
    db = Database(f"sqlite:///{path}")
    with db.read() as conn:
        ids = [r[0] for r in conn.execute(sa.select(calls.c.id))]
    stmt = sa.update(calls).where(calls.c.id == sa.bindparam("cid")).values(state="ended")
    t = time.perf_counter()
    with db.write() as conn:
        for cid in ids:
            conn.execute(stmt, {"cid": cid})
    elapsed = time.perf_counter() - t
    db.dispose()
    return elapsed


def throughput_part(root: Path, n: int, group: int, timeout_s: float, profile: bool) -> None:
    c.console.rule("[bold]part 1: throughput, instant simulated calls")
    with c.step(f"queueing {n:,} calls"):
        settings, db, batch_id = queue_calls(
            root / "run",
            n,
            account_concurrency=2000,
            default_cps=100_000.0,
        )
    db.dispose()  # checkpoints the WAL: the file alone is the whole database
    for name in ("baseline", "reference"):
        (root / name).mkdir()
        shutil.copy(root / "run" / "callfleet.db", root / name / "callfleet.db")
    db = Database(settings.sqlalchemy_url)

    sampler = ActiveSampler(db, 0.05)
    sampler.start()
    sql = SqlTimer(db.engine)
    with c.CallTimer(OP_TARGETS) as ops, sql if profile else contextlib.nullcontext():
        elapsed, wstats, _, profiles = asyncio.run(
            run_dispatcher(
                db,
                settings,
                SimulatedCarrier(0.0),
                batch_id,
                n,
                "dispatching (calls ended)",
                timeout_s,
                profile=profile,
            )
        )
    sampler.stop()
    counts = outcome_counts(db, batch_id)
    db.dispose()
    ended = sum(v for k, v in counts.items() if k.startswith("ended/"))
    if ended != n:
        raise SystemExit(f"only {ended:,} of {n:,} calls ended: {dict(counts)}")

    with c.step(f"baseline: {n:,} claim+finish UPDATE pairs, {group} calls a transaction"):
        t_pairs, changed = baseline_pairs(root / "baseline" / "callfleet.db", group)
    if changed != 2 * n:
        raise SystemExit(f"baseline changed {changed} rows, expected {2 * n}")
    with c.step(f"reference: {n:,} bare single-row UPDATEs in one transaction"):
        t_single = baseline_single_updates(root / "reference" / "callfleet.db")

    rate = n / elapsed
    c.figures(
        f"\nDispatching {n:,} calls (ratio = time / baseline time)",
        [
            (
                f"baseline: claim+finish UPDATE pairs, groups of {group}",
                f"{t_pairs:7.2f} s   {n / t_pairs:9,.0f} calls/s   1.00x",
            ),
            (
                "reference: 1 bare UPDATE per call, one transaction",
                f"{t_single:7.2f} s   {n / t_single:9,.0f} calls/s   {t_single / t_pairs:.2f}x",
            ),
            (
                "Dispatcher: admitted and finished",
                f"{elapsed:7.2f} s   {rate:9,.0f} calls/s   {elapsed / t_pairs:.2f}x",
            ),
        ],
    )
    c.figures(
        "\nInside the dispatcher run",
        [
            ("writer transactions (groups)", f"{wstats.groups:,}"),
            (
                "writer operations",
                f"{wstats.ops:,}  ({wstats.ops / n:.2f} per call: "
                "admission passes, reaps, claims, answers, finishes)",
            ),
            (
                "operations per transaction",
                f"mean {wstats.ops / max(1, wstats.groups):.1f}, "
                f"max {max(wstats.sizes, default=0)}",
            ),
            (
                "writer thread busy",
                f"{wstats.busy:.2f} s of {elapsed:.2f} s "
                f"({100 * wstats.busy / elapsed:.0f} %), {1e6 * wstats.busy / n:,.0f} us per call",
            ),
            *ops.rows(
                n, wstats.busy, "call", "", rest="the rest: SAVEPOINTs, BEGIN, COMMIT, futures"
            ),
            (
                "max admitted/dialing/live",
                f"{max(sampler.samples, default=0):,} (cap 2,000; sampled every 50 ms)",
            ),
            ("outcomes", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))),
        ],
    )
    c.console.print(f"  target (from the brief, not asserted): >= 1,000 calls/s -> {rate:,.0f}/s")
    c.footer()
    if profiles:
        writer_stats, loop_stats = profiles
        c.console.print(
            "\n  (the figures above were measured under cProfile: use a run without "
            "--profile for the rates)"
        )
        c.print_profile(writer_stats, 20, "writer thread (GroupWriter groups), top 20 cumulative")
        c.print_profile(writer_stats, 15, "writer thread, top 15 by own time", sort="tottime")
        c.print_profile(loop_stats, 15, "event loop thread (hopper, runners), top 15 cumulative")
        sql.print(n, wstats.busy)


def cap_part(root: Path, n: int, call_ms: float, timeout_s: float) -> bool:
    cap = 10
    c.console.rule(f"[bold]part 2: the concurrency cap ({cap}), {call_ms:g} ms calls")
    with c.step(f"queueing {n:,} calls"):
        settings, db, batch_id = queue_calls(
            root / "cap",
            n,
            account_concurrency=cap,
            default_cps=100_000.0,
        )
    carrier = FixedCarrier(call_ms / 1000)
    sampler = ActiveSampler(db, 0.003)
    sampler.start()
    elapsed, wstats, live, _ = asyncio.run(
        run_dispatcher(
            db,
            settings,
            carrier,
            batch_id,
            n,
            "calls ended (cap 10)",
            timeout_s,
            loop_sample_s=0.002,
        )
    )
    sampler.stop()
    counts = outcome_counts(db, batch_id)
    db.dispose()
    samples = sampler.samples
    db_max = max(samples, default=0)
    hist = Counter(samples)
    ideal = n / (cap / (call_ms / 1000))
    ok = db_max <= cap and carrier.max_on_carrier <= cap and max(live, default=0) <= cap
    c.figures(
        f"\n{n:,} calls of {call_ms:g} ms under a cap of {cap}",
        [
            ("max in admitted/dialing/live (database)", f"{db_max}  over {len(samples):,} samples"),
            (
                "max on the carrier at once (in process)",
                f"{carrier.max_on_carrier}  (runner.live sampled: max {max(live, default=0)})",
            ),
            (
                "mean in admitted/dialing/live",
                f"{statistics.fmean(samples):.1f}" if samples else "-",
            ),
            ("samples by count", ", ".join(f"{k}:{hist[k]}" for k in sorted(hist))),
            (
                "wall time vs the cap's ideal",
                f"{elapsed:.2f} s vs {ideal:.2f} s ({elapsed / ideal:.2f}x; "
                f"{n / elapsed:,.0f} calls/s, ideal {cap / (call_ms / 1000):,.0f}/s)",
            ),
            ("writer transactions / operations", f"{wstats.groups:,} / {wstats.ops:,}"),
            ("outcomes", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))),
            ("cap respected", "[green]yes[/green]" if ok else "[red]NO: the cap was exceeded"),
        ],
    )
    c.footer()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="calls in the throughput run")
    parser.add_argument("--cap-rows", type=int, default=1_000, help="calls in the cap run")
    parser.add_argument("--call-ms", type=float, default=50.0, help="call length in the cap run")
    parser.add_argument("--group", type=int, default=500, help="baseline calls per transaction")
    parser.add_argument("--timeout", type=float, default=240.0, help="give up after (s), per part")
    parser.add_argument("--skip-cap", action="store_true", help="throughput part only")
    parser.add_argument("--skip-throughput", action="store_true", help="cap part only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the throughput run (writer thread and event loop)",
    )
    args = parser.parse_args()
    c.quiet_logs()
    c.header(
        "bench_dispatch: embedded dispatcher on SQLite",
        rows=f"{args.rows:,}",
        cap_rows=f"{args.cap_rows:,}",
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="callfleet-bench-dispatch-") as tmp:
        root = Path(tmp)
        if not args.skip_throughput:
            throughput_part(root, args.rows, args.group, args.timeout, args.profile)
        if not args.skip_cap:
            ok = cap_part(root, args.cap_rows, args.call_ms, args.timeout)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
