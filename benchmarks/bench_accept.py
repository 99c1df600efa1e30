"""Accepting a 100,000-call batch on SQLite, against a bare bulk insert of the same rows.

Measured, each into a fresh SQLite database in a temporary directory:

1. baseline: one SQLAlchemy Core `INSERT` executemany of the very call rows the API
   produced (same table, indexes and values; same PRAGMAs), in one transaction;
   for reference also the same rows through the bare `sqlite3` module;
2. function path: the functions `POST /v1/batches` runs (shape check, batch fields,
   `prepare_calls`, batch row, call rows in chunks of 5,000), timed by phase;
3. HTTP: `POST /v1/batches` over loopback to `create_app(settings, dispatch=False)`
   served by uvicorn in a thread; the body is serialised before the clock starts.

Figures are printed as ratios against the baseline of the same run (no pass/fail).
`--profile` adds a cProfile of one more accept through the ASGI app in-process
(event loop and worker thread merged), top 15 by cumulative time.

    .venv/bin/python benchmarks/bench_accept.py [--rows N] [--profile] [--open-window]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import _common as c
from callfleet.store.tables import accounts, batches, calls


def bare_core_insert(path: Path, values: list[dict[str, Any]], account_id: str) -> float:
    """Seconds for one Core executemany of `values` into `calls` of a migrated database."""
    settings = c.sqlite_settings(path)
    c.fresh_database(settings).dispose()  # the schema (tables and indexes), via Alembic
    engine = sa.create_engine(settings.sqlalchemy_url)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # the store's durability settings
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    with engine.connect() as conn:
        now = values[0]["created_at"]
        batch_id = values[0]["batch_id"]
        with conn.begin():  # parents for the foreign keys, not timed
            conn.execute(
                sa.insert(accounts).values(
                    id=account_id, name="bench", webhook_secret="x", created_at=now
                )
            )
            conn.execute(
                sa.insert(batches).values(
                    id=batch_id,
                    account_id=account_id,
                    base_prompt=c.PROMPT,
                    call_params={},
                    status="running",
                    total_calls=len(values),
                    remaining=len(values),
                    created_at=now,
                )
            )
        t = time.perf_counter()
        with conn.begin():
            conn.execute(sa.insert(calls), values)
        elapsed = time.perf_counter() - t
    engine.dispose()
    return elapsed


def bare_sqlite3_insert(path: Path, values: list[dict[str, Any]], account_id: str) -> float:
    """The same rows through the sqlite3 module: values pre-converted, one executemany."""
    settings = c.sqlite_settings(path)
    c.fresh_database(settings).dispose()
    cols = list(values[0])
    json_cols = {"params", "request_data", "metadata", "retry", "window"}
    time_cols = {"not_before", "created_at"}

    def convert(v: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for k in cols:
            x = v[k]
            if k in json_cols:
                x = None if x is None else json.dumps(x)
            elif k in time_cols:
                x = x.replace(tzinfo=None).isoformat(" ")
            out.append(x)
        return tuple(out)

    db = sqlite3.connect(path / "callfleet.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    now = values[0]["created_at"].replace(tzinfo=None).isoformat(" ")
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO accounts (id, name, webhook_secret, created_at) VALUES (?, 'b', 'x', ?)",
        (account_id, now),
    )
    db.execute(
        "INSERT INTO batches (id, account_id, base_prompt, call_params, status, total_calls, "
        "remaining, created_at) VALUES (?, ?, 'p', '{}', 'running', 0, 0, ?)",
        (values[0]["batch_id"], account_id, now),
    )
    db.execute("COMMIT")
    sql = f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    t = time.perf_counter()
    tuples = [convert(v) for v in values]
    db.execute("BEGIN")
    db.executemany(sql, tuples)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - t
    db.close()
    return elapsed


def http_accept(path: Path, payload: bytes, n: int) -> tuple[float, dict[str, Any]]:
    from callfleet.wiring import create_app

    settings = c.sqlite_settings(path)
    db = c.fresh_database(settings)
    _account_id, key = c.new_account(db)
    server = c.start_thread_server(create_app(settings, dispatch=False, db=db))
    try:
        with httpx.Client(
            base_url=server.base_url,
            headers={"authorization": key, "content-type": "application/json"},
            timeout=600,
        ) as client:
            t = time.perf_counter()
            resp = client.post("/v1/batches", content=payload)
            elapsed = time.perf_counter() - t
        if resp.status_code != 200 or resp.json().get("call_count") != n:
            raise SystemExit(f"the batch was not accepted: {resp.status_code} {resp.text[:500]}")
        return elapsed, resp.json()
    finally:
        server.stop()
        db.dispose()


def profile_accept(path: Path, payload: bytes) -> tuple[pstats.Stats, pstats.Stats, float]:
    """One accept through the ASGI app in this thread; the worker-thread part profiled too.

    The route's blocking work runs in `respond_idempotently` via `run_in_threadpool`,
    which cProfile (one thread per profiler) would not see; the benchmark swaps in a
    wrapper, in this process only, that profiles the function in its worker thread.
    """
    import callfleet.api.creating as creating
    from callfleet.wiring import create_app

    settings = c.sqlite_settings(path)
    db = c.fresh_database(settings)
    _account_id, key = c.new_account(db)
    app = create_app(settings, dispatch=False, db=db)
    loop_prof, worker_prof = cProfile.Profile(), cProfile.Profile()
    original = getattr(creating, "run_in_threadpool")  # noqa: B009

    async def profiled_threadpool(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def wrapped() -> Any:
            worker_prof.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                worker_prof.disable()

        return await original(wrapped)

    async def go() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            timeout=600,
            headers={"authorization": key, "content-type": "application/json"},
        ) as client:
            t = time.perf_counter()
            loop_prof.enable()
            resp = await client.post("/v1/batches", content=payload)
            loop_prof.disable()
            elapsed = time.perf_counter() - t
        if resp.status_code != 200:
            raise SystemExit(f"profiled accept failed: {resp.status_code} {resp.text[:300]}")
        return elapsed

    setattr(creating, "run_in_threadpool", profiled_threadpool)  # noqa: B010
    try:
        elapsed = asyncio.run(go())
    finally:
        setattr(creating, "run_in_threadpool", original)  # noqa: B010
        db.dispose()
    return pstats.Stats(worker_prof), pstats.Stats(loop_prof), elapsed


PREPARE_CALLEES = (
    "normalize_phone",
    "timezone_for_number",
    "render",
    "next_open",
    "resolve_fields",
    "check_fields",
    "parse_window",
    "parse_start_time",
    "parse_retry",
    "new_id",
    "dnc_hits",
    "owned_numbers",
    "check_from",
)


def timed_prepare(path: Path, payload: bytes) -> tuple[c.CallTimer, dict[str, float], int]:
    """The function path again, with wall-clock timers on what prepare_calls calls."""
    import callfleet.api.submission as submission

    settings = c.sqlite_settings(path)
    db = c.fresh_database(settings)
    acct, _ = c.new_account(db)
    body = json.loads(payload)
    targets = [(submission, name) for name in PREPARE_CALLEES if hasattr(submission, name)]
    with c.CallTimer(targets) as timer:
        accepted = c.insert_batch_direct(db, acct, body, settings)
    db.dispose()
    return timer, accepted.phases, accepted.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="calls in the batch")
    parser.add_argument("--profile", action="store_true", help="print a cProfile breakdown")
    parser.add_argument(
        "--open-window",
        action="store_true",
        help='send calling_window {"start":"00:00","end":"24:00"} (default: the API default '
        "09:00-20:00 callee time, so some rows get a future not_before)",
    )
    parser.add_argument(
        "--sqlite3-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the rows through the bare sqlite3 module",
    )
    args = parser.parse_args()
    n = args.rows
    c.quiet_logs()
    c.header(
        "bench_accept: POST /v1/batches on SQLite",
        rows=f"{n:,}",
        calling_window="00:00-24:00" if args.open_window else "API default (09:00-20:00 callee)",
    )

    with c.step("generating rows"):
        rows, filler = c.make_rows(n)
        body = c.batch_body(rows, open_window=args.open_window)
        payload = json.dumps(body).encode()
        warm_payload = json.dumps(c.batch_body(rows[:300], open_window=args.open_window)).encode()
    c.console.print(
        f"  body: {c.mb(len(payload))} JSON; {n - filler:,} simulator numbers"
        + (
            f" + {filler:,} filler numbers (NPA-555-02XX..: the simulator range holds only "
            f"{c.simulator_capacity():,})"
            if filler
            else ""
        )
    )

    with tempfile.TemporaryDirectory(prefix="callfleet-bench-accept-") as tmp:
        root = Path(tmp)
        with c.step("warm-up (300 rows through both paths: imports, phonenumbers metadata)"):
            wdb_settings = c.sqlite_settings(root / "warm")
            wdb = c.fresh_database(wdb_settings)
            acct, _ = c.new_account(wdb)
            c.insert_batch_direct(wdb, acct, json.loads(warm_payload), wdb_settings)
            wdb.dispose()
            http_accept(root / "warm-http", warm_payload, 300)

        with c.step(f"function path: {n:,} rows"):
            settings = c.sqlite_settings(root / "direct")
            db = c.fresh_database(settings)
            acct, _ = c.new_account(db)
            t = time.perf_counter()
            parsed = json.loads(payload)
            t_parse = time.perf_counter() - t
            accepted = c.insert_batch_direct(db, acct, parsed, settings)
            t_direct = time.perf_counter() - t
            db.dispose()
        values = accepted.call_values

        with c.step(f"baseline: bare SQLAlchemy Core insert of the same {n:,} rows"):
            t_core = bare_core_insert(root / "core", values, acct)
        t_sqlite3 = None
        if args.sqlite3_baseline:
            with c.step(f"reference: bare sqlite3 executemany of the same {n:,} rows"):
                t_sqlite3 = bare_sqlite3_insert(root / "sqlite3", values, acct)

        with c.step(f"HTTP: POST /v1/batches with {n:,} rows"):
            t_http, response = http_accept(root / "http", payload, n)
        del values, accepted.call_values

        result_rows = [
            (
                "baseline: bare Core INSERT (1 executemany, 1 txn)",
                f"{t_core:8.2f} s   {n / t_core:10,.0f} rows/s   1.00x",
            ),
        ]
        if t_sqlite3 is not None:
            result_rows.append(
                (
                    "reference: bare sqlite3 executemany",
                    f"{t_sqlite3:8.2f} s   {n / t_sqlite3:10,.0f} rows/s   "
                    f"{t_sqlite3 / t_core:.2f}x",
                )
            )
        result_rows += [
            (
                "function path (json.loads + route functions)",
                f"{t_direct:8.2f} s   {n / t_direct:10,.0f} rows/s   {t_direct / t_core:.2f}x",
            ),
            (
                "HTTP POST /v1/batches (end to end)",
                f"{t_http:8.2f} s   {n / t_http:10,.0f} rows/s   {t_http / t_core:.2f}x",
            ),
        ]
        c.figures(f"\nAccepting {n:,} calls (ratio = time / baseline time)", result_rows)
        phases = [("json.loads of the body", t_parse), *accepted.phases.items()]
        c.figures(
            "\nFunction path by phase",
            [(name, f"{sec:8.2f} s   {100 * sec / t_direct:5.1f} %") for name, sec in phases],
        )
        sched = response.get("schedule", {})
        c.console.print(
            f"\n  schedule: {sched.get('dial_now', '?'):,} dial now, "
            f"{sched.get('waiting_for_window_or_start_time', '?'):,} wait for their window"
        )
        c.console.print(
            f"  targets (from the brief, not asserted): HTTP under 5 s -> {t_http:.1f} s; "
            f"within 3x of the bare insert -> {t_http / t_core:.2f}x"
        )
        c.footer()

        if args.profile:
            with c.step("function path once more, with timers on prepare_calls' callees"):
                timer, tphases, count = timed_prepare(root / "timed", payload)
            prep = tphases["prepare_calls"]
            c.figures(
                f"\nprepare_calls by callee (wall-clock timers, no profiler; prepare_calls "
                f"took {prep:.2f} s here)",
                timer.rows(
                    count, prep, "row", "", rest="prepare_calls' own code (dicts, loops, rows)"
                ),
            )
            with c.step(f"profiling one more accept of {n:,} rows (in-process ASGI)"):
                worker, loop, t_prof = profile_accept(root / "profile", payload)
            c.console.print(
                f"\n  {t_prof:.1f} s under the profiler (cProfile slows this Python-heavy path "
                f"about {t_prof / t_http:.1f}x); read the shares, not the seconds"
            )
            c.print_profile(
                worker,
                15,
                "accept path, worker thread (respond_idempotently's go(): the route's "
                "transaction), top 15 by cumulative time",
            )
            c.print_profile(worker, 15, "same, top 15 by own time", sort="tottime")
            c.print_profile(
                loop,
                8,
                "accept path, event-loop thread (body, json.loads, auth, response), by own time; "
                "epoll.poll = idle while the worker thread runs",
                sort="tottime",
            )


if __name__ == "__main__":
    main()
