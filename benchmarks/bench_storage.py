"""Recordings and erasure: what the upload adds to call-end-to-webhook, and erasure at scale.

1. **Upload before the webhook.** A real server (in-process engine) runs a batch of
   recorded calls on a benchmark carrier that answers at once and leaves a WAV of
   `--seconds` of 8 kHz audio on the "worker's" disk. For each call, the time from the
   call's end (`calls.ended_at`, the carrier's clock) to its webhook being written
   (`webhook_deliveries.created_at`, same process and clock) is taken. Lines: no
   recording (**baseline**), local storage (a copy into another directory), S3 (moto's
   server on loopback, started here). Medians and p95, and their ratio to the baseline.
2. **Erasure.** An account with `--rows` calls (100,000 by default; 5 of them to each
   number erased, with transcript turns and recordings); `POST /v1/erasure` over HTTP,
   three different numbers, median. **Baseline**: the same on an account with 1,000
   calls, so the ratio shows what the account's size costs (the `(account_id,
   to_number)` index should make it nearly nothing).

Run: `.venv/bin/python benchmarks/bench_storage.py [--calls 40] [--rows 100000] [--pg URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
import wave
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import sqlalchemy as sa

import _common as c

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.s3_server import S3Server  # noqa: E402

from callfleet.store.tables import calls, transcript_turns, webhook_deliveries  # noqa: E402
from callfleet.telephony.carrier import (  # noqa: E402
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
)
from callfleet.wiring import create_app  # noqa: E402


class RecordingCarrier:
    """Answers at once and leaves a WAV of `seconds` on `disk` (when asked to record)."""

    def __init__(self, disk: Path, seconds: float) -> None:
        self.disk = disk
        self.frames = b"\x01\x00" * int(8000 * seconds)
        disk.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return "benchmark carrier"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        await events.answered()
        answered = datetime.now(UTC)
        path = None
        if request.record:
            path = self.disk / f"{request.call_id}-{request.attempt}.wav"
            await asyncio.to_thread(self._write, path)
        return DialResult(
            Outcome.COMPLETED,
            answered_at=answered,
            ended_at=datetime.now(UTC),
            ended_by=EndedBy.USER,
            recording_path=str(path) if path else None,
        )

    def _write(self, path: Path) -> None:
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(self.frames)


class Hooks:
    """A webhook receiver on loopback that answers 200 at once."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def end_to_webhook(tmp: Path, mode: str, n: int, seconds: float, hooks: Hooks) -> list[float]:
    data = tmp / mode
    storage = {
        "none": None,
        "local": f"file://{data / 'objects'}",
        "s3": os.environ.get("BENCH_S3"),
    }
    settings = c.sqlite_settings(
        data,
        storage_url=storage[mode],
        webhook_allow_private=True,
        default_cps=1000,
        account_concurrency=10,
        hopper_interval_s=0.05,
    )
    data.mkdir(parents=True)
    db = c.fresh_database(settings)
    _account, key = c.new_account(db)
    app = create_app(settings, db=db, carrier=RecordingCarrier(data / "worker-disk", seconds))
    server = c.start_thread_server(app)
    try:
        body = {
            "base_prompt": "Hi",
            "call_data": [{"phone_number": f"+1212555{i:04d}"} for i in range(n)],
            "calling_window": c.OPEN_WINDOW,
            "record": mode != "none",
            "webhook": hooks.url,
        }
        sent = httpx.post(
            f"{server.base_url}/v1/batches", json=body, headers={"authorization": key}, timeout=60
        )
        assert sent.status_code == 200, sent.text
        deadline = time.monotonic() + 600
        while True:
            with db.read() as conn:
                rows = conn.execute(
                    sa.select(calls.c.ended_at, webhook_deliveries.c.created_at).join(
                        webhook_deliveries, webhook_deliveries.c.call_id == calls.c.id
                    )
                ).all()
            if len(rows) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return [(made - ended).total_seconds() * 1000 for ended, made in rows]
    finally:
        server.stop()
        db.dispose()


def seed_account(db: Any, account_id: str, rows: int, targets: list[str], storage: Path) -> None:
    """`rows` ended calls; 5 to each target, with turns and a recording file each."""
    now = datetime.now(UTC)
    base = {
        "account_id": account_id,
        "task": "Hi {{name}}",
        "params": {},
        "state": "ended",
        "queue_status": "complete",
        "status": "completed",
        "max_duration": 30.0,
        "record": True,
        "not_before": now,
        "created_at": now,
        "ended_at": now,
        "recording_path": None,
        "recording_state": None,
    }
    target_calls: list[tuple[str, str]] = []
    batch: list[dict[str, Any]] = []
    with db.write() as conn:
        for i in range(rows):
            number = targets[i % len(targets)] if i < 5 * len(targets) else f"+1646{i:07d}"
            call_id = str(uuid.uuid4())
            row = {
                **base,
                "id": call_id,
                "seq": i,
                "to_number": number,
                "request_data": {"name": f"Person {i}"},
                "summary": f"Summary {i}",
            }
            if i < 5 * len(targets):
                key = f"recordings/{call_id}-1.wav"
                (storage / key).parent.mkdir(parents=True, exist_ok=True)
                (storage / key).write_bytes(b"RIFF" + b"\0" * 40_000)
                row.update(recording_path=key, recording_state="stored")
                target_calls.append((call_id, number))
            batch.append(row)
            if len(batch) == 5000:
                conn.execute(sa.insert(calls), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(calls), batch)
        conn.execute(
            sa.insert(transcript_turns),
            [
                {"call_id": cid, "user": "user", "text": "my name is ...", "created_at": now}
                for cid, _n in target_calls
                for _ in range(10)
            ],
        )


def erasure_times(tmp: Path, rows: int, pg: str | None) -> list[float]:
    data = tmp / f"erase-{rows}"
    data.mkdir(parents=True)
    extra = {"database_url": pg} if pg else {}
    settings = c.sqlite_settings(data, storage_url=f"file://{data}", **extra)
    db = c.fresh_database(settings)
    account_id, key = c.new_account(db)
    targets = ["+12125550101", "+12125550102", "+12125550103"]
    with c.step(f"seeding an account with {rows:,} calls"):
        seed_account(db, account_id, rows, targets, data)
    server = c.start_thread_server(create_app(settings, db=db, dispatch=False))
    times = []
    try:
        for number in targets:
            began = time.perf_counter()
            got = httpx.post(
                f"{server.base_url}/v1/erasure",
                json={"phone_number": number},
                headers={"authorization": key},
                timeout=600,
            )
            times.append((time.perf_counter() - began) * 1000)
            assert got.status_code == 200 and got.json()["calls"] == 5, got.text
            assert got.json()["recordings"] == 5 and got.json()["transcript_turns"] == 50
    finally:
        server.stop()
        db.dispose()
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60.0, help="recorded audio per call")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pg", default=None, help="erasure on this PostgreSQL database too")
    args = parser.parse_args()
    c.quiet_logs()
    c.header(
        "Recordings: upload before the webhook; erasure",
        calls=args.calls,
        audio=f"{args.seconds:g} s a call ({c.mb(16000 * args.seconds)} WAV)",
        rows=args.rows,
    )
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        s3 = S3Server.start(tmp / "moto.log")
        try:
            os.environ.update(s3.env())
            os.environ["BENCH_S3"] = f"s3://{s3.make_bucket()}/bench"
            hooks = Hooks()
            found: dict[str, list[float]] = {}
            for mode in ("none", "local", "s3"):
                with c.step(f"{args.calls} recorded calls, storage: {mode}"):
                    found[mode] = end_to_webhook(tmp, mode, args.calls, args.seconds, hooks)
        finally:
            s3.stop()
        base = statistics.median(found["none"])
        c.figures(
            "call end → webhook written (ms)",
            [
                (
                    {
                        "none": "no recording (baseline)",
                        "local": "local storage",
                        "s3": "S3 (moto)",
                    }[m],
                    f"median {statistics.median(v):7.1f}  p95 {p95(v):7.1f}  "
                    f"ratio {statistics.median(v) / base:5.2f}x  (n={len(v)})",
                )
                for m, v in found.items()
            ],
        )
        results = []
        for label, pg in (("SQLite", None), *((("PostgreSQL", args.pg),) if args.pg else ())):
            small = erasure_times(tmp / label, 1_000, pg and _fresh_pg(pg))
            large = erasure_times(tmp / label, args.rows, pg and _fresh_pg(pg))
            ratio = statistics.median(large) / statistics.median(small)
            results += [
                (f"{label}, 1,000 calls (baseline)", f"median {statistics.median(small):7.1f} ms"),
                (
                    f"{label}, {args.rows:,} calls",
                    f"median {statistics.median(large):7.1f} ms  ratio {ratio:5.2f}x",
                ),
            ]
        c.figures("POST /v1/erasure (5 calls, 5 recordings, 50 turns erased)", results)
    c.footer()


def _fresh_pg(admin_url: str) -> str:
    """A new database next to `admin_url`'s (dropped at exit by the operator)."""
    import psycopg

    name = f"bench_storage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


if __name__ == "__main__":
    main()
