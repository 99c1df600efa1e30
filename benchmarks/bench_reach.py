"""What issue 10's admission rules cost the hopper: one admission pass, with and without.

N due calls (default 2,000, one pass's worth) are queued through the route's own
functions on SQLite, every one to a distinct number, half of them from a four-number
pool. Then one `hopper.admission_pass` over them is timed, in a transaction rolled
back after each run so every run sees the same queue:

- **baseline**: `reach=None` (`ReachPolicy.off()`): the window read in the callee's
  zones, no floor, no daily cap; caller IDs as given;
- **reach**: `ReachPolicy` with the 08:00-21:00 floor, the daily cap of 3 (its count
  of each callee's dials in the last 24 hours, against a history of `--history`
  earlier attempts to the same callees) and caller-ID health read once per number
  (a fresh policy each pass: the default reads a number at most every 5 s);
- **worst case**: the same with `health_every_s=0`, every pooled call reading its
  number's 7-day answer rate.

Printed: the median and p95 of each, and reach / baseline.

    .venv/bin/python benchmarks/bench_reach.py [--rows N] [--history H] [--repeat R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import _common as c
from callfleet.config import Settings
from callfleet.dispatch import hopper
from callfleet.dispatch.limits import TokenBuckets
from callfleet.dispatch.reach import ReachPolicy
from callfleet.domain.windows import parse_calling_hours
from callfleet.store.db import Database
from callfleet.store.numbers import add_number
from callfleet.store.tables import call_attempts, calls

POOL = ("+12125550150", "+15185550150", "+14155550150", "+13125550150")


def _seed(db: Database, settings: Settings, rows: int, history: int) -> None:
    account_id, _key = c.new_account(db)
    now = datetime.now(UTC)
    with db.write() as conn:
        for number in POOL:
            add_number(conn, account_id, number, None, None, None, now, pool="sales")
    numbers, _filler = c.phone_numbers(rows)
    half = rows // 2
    for part, extra in ((numbers[:half], {"from": "pool:sales"}), (numbers[half:], {})):
        body = {
            "base_prompt": "Hi",
            "call_data": [{"phone_number": n} for n in part],
            "calling_window": c.OPEN_WINDOW,
            **extra,
        }
        c.insert_batch_direct(db, account_id, body, settings)
    with db.write() as conn:
        ids = [r[0] for r in conn.execute(sa.select(calls.c.id).limit(history))]
        conn.execute(
            sa.insert(call_attempts),
            [
                {
                    "call_id": call_id,
                    "attempt": 100 + i,
                    "worker": "bench",
                    "started_at": now - timedelta(hours=1 + i % 20),
                    "status": "no-answer",
                }
                for i, call_id in enumerate(ids * max(1, history // max(1, len(ids))))
            ][:history],
        )


def _timed(db: Database, policy: Any, repeat: int) -> list[float]:
    """Median-ready pass times; `policy()` makes a fresh policy for each pass (None: off)."""
    out: list[float] = []
    for _ in range(repeat):
        reach = policy()
        with db.engine.connect() as conn:
            tx = conn.begin()
            began = time.perf_counter()
            admission = hopper.admission_pass(
                conn,
                datetime.now(UTC),
                default_cap=100_000,
                default_cps=1e6,
                buckets=TokenBuckets(),
                reach=reach,
            )
            out.append(1000 * (time.perf_counter() - began))
            tx.rollback()
        assert admission.jobs, "nothing was admitted: the benchmark measures nothing"
    return out


def _summary(ms: list[float]) -> str:
    ordered = sorted(ms)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--history", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    c.quiet_logs()
    c.header("issue 10: the admission pass with the reach rules", rows=args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reach-"))
    try:
        settings = c.sqlite_settings(tmp, calling_hours="off")
        db = c.fresh_database(settings)
        _seed(db, settings, args.rows, args.history)

        def reach(every_s: float) -> Any:
            return lambda: ReachPolicy(
                floor=parse_calling_hours("08:00-21:00"),
                daily_cap=3,
                min_answer_rate=0.1,
                min_sample=50,
                health_every_s=every_s,
            )

        def off() -> None:
            return None

        _timed(db, off, 2)  # warm caches (time zones, statements)
        base = _timed(db, off, args.repeat)
        ours = _timed(db, reach(5.0), args.repeat)
        worst = _timed(db, reach(0.0), args.repeat)
        ratio = statistics.median(ours) / statistics.median(base)
        worst_ratio = statistics.median(worst) / statistics.median(base)
        c.figures(
            f"one admission pass over {args.rows:,} due calls",
            [
                ("baseline (reach off)", _summary(base)),
                ("reach (floor, daily cap, pools, health read once a number)", _summary(ours)),
                ("reach / baseline", f"{ratio:.2f}"),
                ("reach, health read before every pooled call", _summary(worst)),
                ("that / baseline", f"{worst_ratio:.2f}"),
            ],
        )
        db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c.footer()


if __name__ == "__main__":
    main()
