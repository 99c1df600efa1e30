"""Fan-out: the bytes a batch costs in the database per byte of its request (SQLite).

One `POST /v1/batches` of N rows (default 100,000) with the usual benchmark prompt
plus batch-level `metadata`, `request_data` and `first_sentence`, over loopback to a
uvicorn server in a thread. Printed:

- request bytes; stored bytes of the call parameters (the batch's prompt and fields
  once, each call row's task, params, request_data and metadata) and their ratio to
  the request (target at most 2);
- the old way, measured in the same run: what the rows held when every call kept the
  batch's rendered prompt and fields (each call expanded as the dialler sees it);
- the SQLite files' size, and rows accepted per second.

    .venv/bin/python benchmarks/bench_fanout.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import _common as c
from callfleet.api.app import create_app
from callfleet.domain.call_fields import json_size
from callfleet.store.batches import expand_stored_call
from callfleet.store.tables import batches, calls


def stored_bytes(conn: sa.Connection, batch_id: str) -> tuple[int, int]:
    """(bytes stored now, bytes the old way) of the batch's call parameters."""
    batch = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).one()
    now = len(batch.base_prompt.encode()) + json_size(batch.call_params)
    old = now
    query = sa.select(
        calls.c.batch_id, calls.c.task, calls.c.params, calls.c.request_data, calls.c.metadata
    ).where(calls.c.batch_id == batch_id)
    for row in conn.execute(query):
        now += len(row.task.encode()) + json_size(row.params) + json_size(row.request_data)
        now += json_size(row.metadata) if row.metadata is not None else 0
        task, params, variables = expand_stored_call(
            conn, row.batch_id, row.task, row.params, row.request_data
        )
        old += len(task.encode()) + json_size(params) + json_size(variables)
        old += json_size(params.get("metadata"))
    return now, old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    c.quiet_logs()
    c.header("fan-out: stored bytes per request byte", rows=args.rows)
    rows, _filler = c.make_rows(args.rows)
    body: dict[str, Any] = c.batch_body(rows, open_window=False)
    body["metadata"] = {"campaign": "spring", "owner": "sales-team", "notes": "n" * 1000}
    body["request_data"] = {"company": "Acme Ltd", "offer": "20% off the first year"}
    body["first_sentence"] = "Hello, is this {{business}}?"
    raw = json.dumps(body).encode()
    with tempfile.TemporaryDirectory() as tmp:
        settings = c.sqlite_settings(Path(tmp), max_batch_rows=max(args.rows, 1))
        db = c.fresh_database(settings)
        _account, key = c.new_account(db)
        server = c.start_thread_server(create_app(settings, db=db))
        try:
            started = time.monotonic()
            resp = httpx.post(
                f"{server.base_url}/v1/batches",
                content=raw,
                headers={"authorization": key, "content-type": "application/json"},
                timeout=600,
            )
            took = time.monotonic() - started
        finally:
            server.stop()
        resp.raise_for_status()
        with db.read() as conn:
            now, old = stored_bytes(conn, resp.json()["batch_id"])
        files = c.sqlite_files_size(Path(tmp) / "callfleet.db")
        db.dispose()
    c.figures(
        f"{args.rows:,} rows",
        [
            ("request", c.mb(len(raw))),
            ("stored (batch fields once)", f"{c.mb(now)}  = {now / len(raw):.2f} x the request"),
            ("the old way (copied per row)", f"{c.mb(old)}  = {old / len(raw):.2f} x the request"),
            ("SQLite files (with indexes)", f"{c.mb(files)}  = {files / len(raw):.2f} x"),
            ("accepted", f"{args.rows / took:,.0f} rows/s ({took:.1f} s over HTTP)"),
        ],
    )
    c.footer()


if __name__ == "__main__":
    main()
