"""Peak memory of a batch's export (`GET /v1/batches/{id}/export`) for 100,000 rows vs 10,000.

For each size, a fresh SQLite database (in a temporary directory) gets one account and
one ended batch of N calls, each with five row properties, a summary and a two-field
analysis, written straight through `store` (submission has its own benchmarks). Then
a child process builds the real app (`wiring.create_app`) and streams the export
through it in-process (raw ASGI: each body chunk counted and dropped, as a
socket would), for CSV, for JSONL, and for the dashboard's "Export CSV" link
(`/batches/{id}/export.csv`, signed in: the API's CSV relayed through the
dashboard's in-process client), and prints its peak RSS
(`ru_maxrss`) before and during the export. Figures: the peak RSS for each size and
format, the growth over the child's RSS before the export, and the ratio of the
100,000-row peak to the 10,000-row peak (flat memory: close to 1).

    .venv/bin/python benchmarks/bench_export.py [--rows 100000] [--small 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from callfleet.config import Settings
from callfleet.store.accounts import create_account, create_key
from callfleet.store.batches import NewBatch, insert_batch
from callfleet.store.calls import insert_calls
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.store.tables import calls


def build(data_dir: Path, rows: int) -> tuple[str, str]:
    """A database with one ended batch of `rows` calls; its key and batch id."""
    settings = Settings(data_dir=data_dir)
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    now = datetime.now(UTC)
    with db.write() as conn:
        account = create_account(conn, "bench")
        key = create_key(conn, account.id, "bench")
        batch_id = "bench-batch"
        insert_batch(
            conn,
            account.id,
            NewBatch(batch_id, None, "bench", "Hi {{name}}", {}, False, None, rows),
            now,
        )
    for start in range(0, rows, 10_000):
        chunk = [
            {
                "id": f"call-{i:07d}",
                "account_id": account.id,
                "batch_id": batch_id,
                "seq": i,
                "to_number": f"+1212555{i % 10_000:04d}",
                "task": "",
                "params": {},
                "request_data": {
                    "name": f"Person {i}",
                    "phone_number": f"+1212555{i % 10_000:04d}",
                    "city": "Springfield",
                    "note": "a note, with a comma",
                    "order": i,
                },
                "state": "ended",
                "queue_status": "complete",
                "status": "completed",
                "answered_by": "human",
                "max_duration": 30.0,
                "not_before": now,
                "created_at": now,
                "call_length": 1.5,
                "summary": "The callee confirmed the appointment.",
                "analysis": {"confirmed": True, "reason": "said yes"},
            }
            for i in range(start, min(rows, start + 10_000))
        ]
        with db.write() as conn:
            insert_calls(conn, account.id, chunk)
    with db.read() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(calls)).scalar()
    assert count == rows, count
    db.dispose()
    return key, batch_id


def child(data_dir: str, key: str, batch_id: str, fmt: str) -> None:
    """In a fresh process: stream one export through the app and print the figures."""
    from callfleet.wiring import create_app

    settings = Settings(data_dir=Path(data_dir))
    app = create_app(settings, dispatch=False)
    path, query = f"/v1/batches/{batch_id}/export", f"format={fmt}"
    headers = [(b"host", b"bench"), (b"authorization", key.encode())]
    if fmt == "dashboard":
        codec = app.state.dashboard.codec
        cookie = f"callfleet_session={codec.dump(codec.new(key))}"
        path, query = f"/batches/{batch_id}/export.csv", ""
        headers = [(b"host", b"bench"), (b"cookie", cookie.encode())]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def run() -> tuple[int, int]:
        # Raw ASGI, not httpx.ASGITransport (which collects the whole body): each chunk
        # the app sends is counted and dropped, as a socket would.
        counted = {"bytes": 0, "lines": 0, "status": 0}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
        }

        requested = asyncio.Event()
        never = asyncio.Event()

        async def receive() -> dict[str, object]:
            if not requested.is_set():
                requested.set()
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                counted["status"] = int(message["status"])  # type: ignore[call-overload]
            elif message["type"] == "http.response.body":
                body = message.get("body") or b""
                assert isinstance(body, bytes)
                counted["bytes"] += len(body)
                counted["lines"] += body.count(b"\n")

        await app(scope, receive, send)
        assert counted["status"] == 200, counted
        return counted["bytes"], counted["lines"]

    t0 = time.monotonic()
    size, lines = asyncio.run(run())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "bytes": size,
                "lines": lines,
                "seconds": round(time.monotonic() - t0, 2),
                "rss_before_kib": before,
                "peak_rss_kib": peak,
            }
        )
    )


def measure(rows: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        key, batch_id = build(Path(tmp), rows)
        for fmt in ("csv", "jsonl", "dashboard"):
            res = subprocess.run(
                [sys.executable, __file__, "--child", tmp, key, batch_id, fmt],
                check=True,
                capture_output=True,
                text=True,
            )
            out[fmt] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    args = parser.parse_args()
    results = {n: measure(n) for n in (args.small, args.rows)}
    for n, by_fmt in results.items():
        for fmt, r in by_fmt.items():
            print(
                f"{n:>7} rows {fmt:5}: {r['lines']} lines, {r['bytes'] / 1e6:.1f} MB in "
                f"{r['seconds']} s; peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB "
                f"(+{(r['peak_rss_kib'] - r['rss_before_kib']) / 1024:.1f} MiB over "
                "the app before the export)"
            )
    for fmt in ("csv", "jsonl", "dashboard"):
        ratio = results[args.rows][fmt]["peak_rss_kib"] / results[args.small][fmt]["peak_rss_kib"]
        print(f"peak RSS ratio {fmt} {args.rows} / {args.small} rows: {ratio:.2f}")


if __name__ == "__main__":
    main()
