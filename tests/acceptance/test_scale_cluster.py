"""A callfleet cluster of real processes, for the scale acceptance tests.

`Cluster` runs `callfleet serve` (API + hopper, leader-elected) and `callfleet
worker` subprocesses against one PostgreSQL database, with the procrastinate engine
and the media-less phone simulator at a small time scale (calls last about 0.2 to
0.6 s). Every worker appends each dial to one file (`CALLFLEET_SIMULATOR_DIAL_LOG`):
that record, not our database, is what "never dialled twice" and "never above the
cap" are checked against, alongside the `call_attempts` table. A small HTTP receiver
counts the batch webhook's deliveries by `webhook-id`.

The other `test_scale_*.py` files import this module; its own tests check that the
distributed mode refuses SQLite clearly, stop a batch live on a worker, and stop a
worker with SIGTERM. Process logs are printed when a test fails (`SCALE_LOG_LEVEL=info`
makes them talkative); a process that ignores SIGTERM for 20 s fails the test and
dumps its threads (faulthandler).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from callfleet.domain.phones import _geographic_area_codes
from callfleet.store.db import Database
from callfleet.store.tables import call_attempts, calls, webhook_deliveries
from callfleet.worker import SHUTDOWN_NOTE
from conftest import free_port, wait_for

BIN = Path(sys.executable).parent / "callfleet"
ALWAYS = {"start": "00:00", "end": "24:00"}


def numbers(n: int) -> list[str]:
    """`n` distinct simulator numbers that answer: people (00-39) and voicemail (40-59)."""
    codes = sorted(_geographic_area_codes())
    return [f"+1{code}55501{xx:02d}" for code in codes for xx in range(60)][:n]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Receiver:
    """A webhook receiver on loopback: records (path, webhook-id) of every request."""

    def __init__(self) -> None:
        seen: list[tuple[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                seen.append((self.path, self.headers.get("webhook-id", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Cluster:
    tmp: Path
    db_url: str
    overrides: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dial_log = self.tmp / "dials.log"
        env = dict(os.environ)
        env.update(
            CALLFLEET_DATA_DIR=str(self.tmp),
            CALLFLEET_DATABASE_URL=self.db_url,
            CALLFLEET_ENGINE="procrastinate",
            CALLFLEET_CARRIER="simulator-nomedia",
            CALLFLEET_SIMULATOR_TIME_SCALE="0.01",
            CALLFLEET_SIMULATOR_DIAL_LOG=str(self.dial_log),
            CALLFLEET_ACCOUNT_CONCURRENCY="20",
            CALLFLEET_DEFAULT_CPS="1000",
            CALLFLEET_HOPPER_INTERVAL_S="0.05",
            CALLFLEET_LEADER_INTERVAL_S="0.3",
            CALLFLEET_LEASE_S="2",
            CALLFLEET_WORKER_STALLED_S="3",
            CALLFLEET_WORKER_SHUTDOWN_DEADLINE_S="2",
            CALLFLEET_WEBHOOK_ALLOW_PRIVATE="true",
            CALLFLEET_WEBHOOK_RETRY_SCALE="0.01",
            PYTHONFAULTHANDLER="1",
            PYTHONUNBUFFERED="1",
            CALLFLEET_LOG_LEVEL=os.environ.get("SCALE_LOG_LEVEL", "warning"),
        )
        env.update(self.overrides)
        self.env = env
        self.db = Database(self.db_url.replace("postgresql://", "postgresql+psycopg://", 1))

    # -- processes

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN), *args], env=self.env, capture_output=True, check=False, timeout=120
        )
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        return out.stdout.decode()

    def new_key(self) -> str:
        self.cli("migrate")
        return self.cli("keys", "create", "--name", "scale").strip().splitlines()[-1]

    def _spawn(self, name: str, args: list[str], port: int | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            [str(BIN), *args], env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    def serve(self, name: str = "api") -> Proc:
        port = free_port()
        proc = self._spawn(name, ["serve", "--port", str(port)], port)

        def up() -> bool:
            assert proc.popen.poll() is None, f"{name} exited:\n{self.tail(proc)}"
            try:
                return httpx.get(f"{proc.base}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, interval=0.1)
        return proc

    def worker(self, name: str, concurrency: int) -> Proc:
        proc = self._spawn(name, ["worker", "--concurrency", str(concurrency)])

        def registered() -> bool:
            assert proc.popen.poll() is None, f"{name} exited:\n{self.tail(proc)}"
            return self._has_backend(f"callfleet-worker %:{proc.pid}")

        wait_for(registered, timeout=60, interval=0.1)
        return proc

    def _has_backend(self, pattern: str) -> bool:
        rows = self.pg(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s", pattern
        )
        return bool(rows[0][0])

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        proc.popen.send_signal(sig)
        proc.popen.wait(timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.send_signal(signal.SIGABRT)  # faulthandler prints every thread
                proc.popen.wait(timeout=10)
                self.hung.append(proc.name)
        self.db.dispose()

    def tail(self, proc: Proc, lines: int = 40) -> str:
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid})\n{self.tail(p)}" for p in self.procs)

    # -- database and API

    def pg(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, args)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def leader_pid(self) -> int | None:
        """The OS pid of the API process holding the hopper's lock (from pg_locks)."""
        rows = self.pg(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = 1667656820 AND l.objid = 1 "
            "AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        if not rows:
            return None
        return int(str(rows[0][0]).rsplit(":", 1)[1])

    def submit(self, api: Proc, key: str, count: int, **extra: Any) -> str:
        body = {
            "base_prompt": "Hi",
            "call_data": [{"phone_number": n} for n in numbers(count)],
            "calling_window": ALWAYS,
            **extra,
        }
        resp = httpx.post(
            f"{api.base}/v1/batches", headers={"authorization": key}, json=body, timeout=120
        )
        assert resp.status_code == 200, resp.text
        batch_id: str = resp.json()["batch_id"]
        return batch_id

    def ended(self, batch_id: str) -> int:
        rows = self.pg(
            "SELECT count(*) FROM calls WHERE batch_id = %s AND state = 'ended'", batch_id
        )
        return int(rows[0][0])

    def wait_ended(self, batch_id: str, count: int, timeout: float) -> None:
        wait_for(lambda: self.ended(batch_id) >= count, timeout=timeout, interval=0.1)

    # -- the independent record

    def dials(self) -> tuple[list[tuple[float, str, int]], dict[tuple[str, int], float]]:
        """(starts as (time, call id, attempt), ends by (call id, attempt))."""
        starts: list[tuple[float, str, int]] = []
        ends: dict[tuple[str, int], float] = {}
        for line in self.dial_log.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start":
                starts.append((float(parts[1]), parts[2], int(parts[3])))
            elif parts[0] == "end":
                ends[(parts[2], int(parts[3]))] = float(parts[1])
        return starts, ends


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals]
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = live = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


@dataclass
class Verdict:
    calls: int
    interrupted: int
    dial_peak: int
    db_peak: int
    statuses: Counter[str]


def check_batch(cluster: Cluster, batch_id: str, count: int, cap: int) -> Verdict:
    """Every promise of the issue, from the dial record and from the database."""
    with cluster.db.read() as conn:
        rows = conn.execute(
            sa.select(calls.c.id, calls.c.state, calls.c.status, calls.c.error_message).where(
                calls.c.batch_id == batch_id
            )
        ).all()
        attempts = conn.execute(
            sa.select(
                call_attempts.c.call_id,
                call_attempts.c.attempt,
                call_attempts.c.started_at,
                call_attempts.c.ended_at,
            )
            .join(calls, calls.c.id == call_attempts.c.call_id)
            .where(calls.c.batch_id == batch_id)
        ).all()
        deliveries = conn.execute(
            sa.select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.batch_id == batch_id,
                webhook_deliveries.c.event == "batch.completed",
            )
        ).all()
        batch_status = conn.execute(
            sa.text("SELECT status, remaining FROM batches WHERE id = :id"), {"id": batch_id}
        ).one()
    ids = {r.id for r in rows}
    # Every call is terminal, and the batch is done.
    assert len(rows) == count
    assert {r.state for r in rows} == {"ended"}, Counter(r.state for r in rows)
    assert tuple(batch_status) == ("completed", 0)
    # No (call, attempt) dialled twice: the carrier's own record ...
    starts, ends = cluster.dials()
    mine = [(t, c, a) for t, c, a in starts if c in ids]
    per_attempt = Counter((c, a) for _, c, a in mine)
    twice = {k: n for k, n in per_attempt.items() if n > 1}
    assert not twice, f"dialled twice: {twice}"
    # ... and the database's. Each dial has its claimed attempt; a call whose worker
    # died between claim and dial has an attempt row and no dial (it is interrupted).
    claimed = {(a.call_id, a.attempt) for a in attempts}
    assert len(claimed) == len(attempts)
    assert set(per_attempt) <= claimed
    assert {a.call_id for a in attempts} <= ids
    # The account's cap held where the carrier sees calls. A dial with no end line
    # died with its worker: it counts until the database ended it.
    db_end = {(a.call_id, a.attempt): a.ended_at for a in attempts}
    spans = []
    for t, c, a in mine:
        end = ends.get((c, a))
        if end is None:
            ended_at: datetime | None = db_end.get((c, a))
            end = ended_at.timestamp() if ended_at is not None else time.time()
        spans.append((t, end))
    dial_peak = max_overlap(spans)
    db_spans = [
        (a.started_at.timestamp(), (a.ended_at or a.started_at).timestamp()) for a in attempts
    ]
    db_peak = max_overlap(db_spans)
    assert dial_peak <= cap, f"{dial_peak} calls in the air, cap {cap}"
    assert db_peak <= cap, f"{db_peak} attempts at once in call_attempts, cap {cap}"
    # The batch webhook was written exactly once.
    assert len(deliveries) == 1, f"{len(deliveries)} batch.completed deliveries"
    interrupted = sum(1 for r in rows if r.error_message and "Interrupted" in r.error_message)
    return Verdict(
        calls=len(rows),
        interrupted=interrupted,
        dial_peak=dial_peak,
        db_peak=db_peak,
        statuses=Counter(str(r.status) for r in rows),
    )


def wait_webhook_once(receiver: Receiver, path: str = "/batch", timeout: float = 30) -> None:
    wait_for(lambda: any(p == path for p, _ in receiver.seen), timeout=timeout)
    time.sleep(0.5)  # a second delivery, if there were one, would arrive meanwhile
    ids = {wid for p, wid in receiver.seen if p == path}
    assert len(ids) == 1, receiver.seen


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, pg_url)
    try:
        yield made
    finally:
        made.close()
        print(made.logs())  # pytest shows it when the test failed
        assert not made.hung, f"did not stop on SIGTERM within 20 s: {made.hung}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_distributed_mode_refuses_sqlite(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        CALLFLEET_DATA_DIR=str(tmp_path),
        CALLFLEET_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
        CALLFLEET_ENGINE="procrastinate",
    )
    serve = subprocess.run([str(BIN), "serve"], env=env, capture_output=True, timeout=60)
    assert serve.returncode == 2
    assert b"CALLFLEET_ENGINE" in serve.stderr and b"PostgreSQL" in serve.stderr
    env.pop("CALLFLEET_ENGINE")
    worker = subprocess.run([str(BIN), "worker"], env=env, capture_output=True, timeout=60)
    assert worker.returncode == 2
    assert b"needs PostgreSQL" in worker.stderr


def test_the_dial_log_records_each_dial(cluster: Cluster, receiver: Receiver) -> None:
    key = cluster.new_key()
    api = cluster.serve()
    cluster.worker("w1", concurrency=10)
    batch_id = cluster.submit(api, key, 30, batch_webhook=f"{receiver.url}/batch")
    cluster.wait_ended(batch_id, 30, timeout=60)
    verdict = check_batch(cluster, batch_id, 30, cap=20)
    wait_webhook_once(receiver)
    starts, ends = cluster.dials()
    assert len(starts) == len(ends) == 30
    assert verdict.interrupted == 0
    assert json.dumps(dict(verdict.statuses))


def test_stopping_a_batch_hangs_up_calls_live_on_a_worker(cluster: Cluster) -> None:
    # Heartbeats every 10 s: a quick hangup can only come from procrastinate's abort.
    cluster.env["CALLFLEET_LEASE_S"] = "30"
    cluster.env["CALLFLEET_SIMULATOR_TIME_SCALE"] = "0.5"  # calls of 13 s and more
    key = cluster.new_key()
    api = cluster.serve()
    cluster.worker("w1", concurrency=10)
    batch_id = cluster.submit(api, key, 6)
    wait_for(
        lambda: cluster.pg("SELECT count(*) FROM calls WHERE state = 'live'")[0][0] >= 4,
        timeout=30,
    )
    began = time.monotonic()
    stopped = httpx.post(
        f"{api.base}/v1/batches/{batch_id}/stop", headers={"authorization": key}, timeout=30
    )
    assert stopped.status_code == 200, stopped.text
    cluster.wait_ended(batch_id, 6, timeout=20)
    took = time.monotonic() - began
    assert took < 5, f"live calls took {took:.1f} s to hang up"
    aborted = cluster.pg("SELECT count(*) FROM procrastinate_jobs WHERE status = 'aborted'")
    assert aborted[0][0] >= 4


def test_sigterm_stops_a_worker_gracefully(cluster: Cluster) -> None:
    cluster.env["CALLFLEET_SIMULATOR_TIME_SCALE"] = "0.5"  # calls of 13 s and more
    cluster.env["CALLFLEET_WORKER_SHUTDOWN_DEADLINE_S"] = "2"
    cluster.env["CALLFLEET_LEASE_S"] = "30"
    key = cluster.new_key()
    api = cluster.serve()
    doomed = cluster.worker("w1", concurrency=10)
    batch_id = cluster.submit(api, key, 4)
    wait_for(
        lambda: cluster.pg("SELECT count(*) FROM calls WHERE state = 'live'")[0][0] == 4,
        timeout=30,
    )
    began = time.monotonic()
    doomed.popen.send_signal(signal.SIGTERM)
    doomed.popen.wait(timeout=30)
    took = time.monotonic() - began
    assert doomed.popen.returncode == 0
    assert 1.5 < took < 8, took
    rows = cluster.pg(
        "SELECT state, status, error_message FROM calls WHERE batch_id = %s", batch_id
    )
    assert [r[0] for r in rows] == ["ended"] * 4
    assert {r[2] for r in rows} == {SHUTDOWN_NOTE}
    assert {r[1] for r in rows} == {"completed"}
