"""The procrastinate engine against the real PostgreSQL on 127.0.0.1:5432.

Admission and the jobs commit in one transaction; a worker runs the jobs through
the same `run_call`; a second delivery of a job is stopped by the claim; an abort
ends a live call; a stopping worker hangs up at its deadline; the reaper re-queues
the jobs of a dead worker. Batches are submitted through the real API (with no
dispatcher) and the carrier is the real phone simulator behind a recorder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from procrastinate import exceptions
from pydantic import ValidationError
from typer.testing import CliRunner

from callfleet.cli import app as cli_app
from callfleet.config import Settings
from callfleet.dispatch import hopper, lifecycle
from callfleet.dispatch.leader import SoloLeader
from callfleet.dispatch.limits import TokenBuckets
from callfleet.dispatch.procrastinate_engine import (
    ProcrastinateEngine,
    ensure_schema,
    libpq_url,
    queueing_lock,
)
from callfleet.dispatch.service import Dispatcher
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.store.tables import call_attempts, calls
from callfleet.telephony.carrier import CallEvents, DialRequest, DialResult
from callfleet.wiring import create_app
from callfleet.worker import SHUTDOWN_NOTE, CallWorker

ALWAYS = {"start": "00:00", "end": "24:00"}


class Recorder:
    """The phone simulator, plus a record of every dial and of calls in the air."""

    def __init__(self, time_scale: float) -> None:
        self.inner = SimulatedCarrier(time_scale=time_scale)
        self.dials: list[tuple[str, int]] = []
        self.active = 0

    def describe(self) -> str:
        return "recorder"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.dials.append((request.call_id, request.attempt))
        self.active += 1
        try:
            return await self.inner.place_call(request, events)
        finally:
            self.active -= 1


@dataclass
class Env:
    settings: Settings
    db: Database
    account_id: str
    key: str


@pytest.fixture
def env(pg_url: str, tmp_path: Path) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_url,
        engine="procrastinate",
        account_concurrency=50,
        default_cps=1000,
        worker_stalled_s=1.0,
        worker_shutdown_deadline_s=4.0,
        log_level="warning",
    )
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    ensure_schema(db)
    with db.write() as conn:
        account = create_account(conn, "procrastinate")
        key = create_key(conn, account.id, "procrastinate")
    yield Env(settings, db, account.id, key)
    db.dispose()


def submit(env: Env, numbers: list[str]) -> list[str]:
    """Send a batch through the real API (no dispatcher); return its call ids in order."""
    app = create_app(env.settings, dispatch=False, db=env.db)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(
                "/v1/batches",
                headers={"authorization": env.key},
                json={
                    "base_prompt": "Hi",
                    "call_data": [{"phone_number": n} for n in numbers],
                    "calling_window": ALWAYS,
                },
            )

    resp = asyncio.run(post())
    assert resp.status_code == 200, resp.text
    with env.db.read() as conn:
        rows = conn.execute(
            sa.select(calls.c.id)
            .where(calls.c.batch_id == resp.json()["batch_id"])
            .order_by(calls.c.seq)
        ).all()
    return [r.id for r in rows]


def people(n: int) -> list[str]:
    codes = ["212", "213", "312", "415", "503", "617", "702", "808"]
    return [f"+1{codes[i // 40]}55501{i % 40:02d}" for i in range(n)]


def admit(env: Env, engine: ProcrastinateEngine) -> list[hopper.Job]:
    with env.db.write() as conn:
        admission = hopper.admission_pass(
            conn, datetime.now(UTC), default_cap=50, default_cps=1000, buckets=TokenBuckets()
        )
        engine.enqueue(conn, admission.jobs)
    return admission.jobs


def pq(env: Env, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(env.settings.sqlalchemy_url), autocommit=True) as conn:
        cur = conn.execute(query, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def states(env: Env) -> dict[str, str]:
    with env.db.read() as conn:
        return {r.id: r.state for r in conn.execute(sa.select(calls.c.id, calls.c.state))}


async def until(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s} s")
        await asyncio.sleep(0.05)


class Rollback(Exception):
    pass


def test_admission_and_its_jobs_commit_in_one_transaction(env: Env) -> None:
    ids = submit(env, people(5))
    engine = ProcrastinateEngine(env.settings, env.db)
    try:
        with env.db.write() as conn:
            admission = hopper.admission_pass(
                conn, datetime.now(UTC), default_cap=50, default_cps=1000, buckets=TokenBuckets()
            )
            engine.enqueue(conn, admission.jobs)
            inside = conn.execute(sa.text("SELECT count(*) FROM procrastinate_jobs")).scalar()
            assert inside == 5
            raise Rollback
    except Rollback:
        pass
    assert pq(env, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]
    assert set(states(env).values()) == {"queued"}

    jobs = admit(env, engine)
    assert sorted(j.call_id for j in jobs) == sorted(ids)
    rows = pq(env, "SELECT queueing_lock, args, status, queue_name FROM procrastinate_jobs")
    assert sorted(r[0] for r in rows) == sorted(queueing_lock(i, 1) for i in ids)
    assert all(r[2] == "todo" and r[3] == "calls" for r in rows)
    assert {r[1]["call_id"] for r in rows} == set(ids)
    assert all(r[1]["attempt"] == 1 and r[1]["batch_id"] for r in rows)
    assert set(states(env).values()) == {"admitted"}

    # A second enqueue of the same (call, attempt) while its job waits is a no-op.
    with env.db.write() as conn:
        engine.enqueue(conn, jobs)
    assert pq(env, "SELECT count(*) FROM procrastinate_jobs") == [(5,)]


def test_a_failed_defer_rolls_the_admission_back(env: Env) -> None:
    submit(env, people(3))
    pq(env, "ALTER TABLE procrastinate_jobs RENAME TO procrastinate_jobs_away")

    async def scenario() -> None:
        dispatcher = Dispatcher(env.db, env.settings, Recorder(0.0), leader=SoloLeader())
        dispatcher.writer.start()
        try:
            with pytest.raises(exceptions.ConnectorException) as failed:
                await dispatcher.admit_once()
            assert "procrastinate_jobs" in str(failed.value.__cause__)
        finally:
            dispatcher.writer.stop()

    asyncio.run(scenario())
    pq(env, "ALTER TABLE procrastinate_jobs_away RENAME TO procrastinate_jobs")
    assert set(states(env).values()) == {"queued"}  # nothing admitted without its job


async def _run_worker(worker: CallWorker, body: Any) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await body()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


def test_a_worker_runs_the_jobs_and_the_claim_stops_a_second_delivery(env: Env) -> None:
    ids = submit(env, people(20))
    carrier = Recorder(0.0)
    engine = ProcrastinateEngine(env.settings, env.db)
    worker = CallWorker(env.settings, concurrency=8, carrier=carrier)

    async def body() -> None:
        jobs = admit(env, engine)
        assert len(jobs) == 20
        await until(lambda: set(states(env).values()) == {"ended"}, 30, "calls ended")
        # Deliver every job again, as an at-least-once engine may (the first jobs are
        # finished, so the queueing lock lets these in).
        with env.db.write() as conn:
            engine.enqueue(conn, jobs)

        def drained() -> bool:
            left = pq(env, "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'")
            return left == [(0,)]

        await until(drained, 30, "duplicate jobs ran")

    asyncio.run(_run_worker(worker, body))
    assert sorted(carrier.dials) == sorted((i, 1) for i in ids)
    with env.db.read() as conn:
        attempts = conn.execute(sa.select(call_attempts.c.call_id)).all()
    assert sorted(a.call_id for a in attempts) == sorted(ids)
    ran = worker.metrics.jobs._value.get()
    assert ran == 40  # 20 dials and 20 deliveries the claim turned away


def test_an_abort_hangs_up_a_live_call(env: Env) -> None:
    [call_id] = submit(env, ["+12125550106"])  # rings 3 s, then talks for 11 s
    carrier = Recorder(0.5)
    engine = ProcrastinateEngine(env.settings, env.db)
    worker = CallWorker(env.settings, concurrency=4, carrier=carrier)
    took: list[float] = []

    async def body() -> None:
        await engine.open()
        try:
            admit(env, engine)
            await until(lambda: states(env)[call_id] == "live", 40, "call answered")
            began = time.monotonic()
            assert engine.request_hangup(call_id)
            await until(lambda: states(env)[call_id] == "ended", 10, "call hung up")
            took.append(time.monotonic() - began)
        finally:
            await engine.shutdown(1)

    asyncio.run(_run_worker(worker, body))
    assert took[0] < 4
    with env.db.read() as conn:
        row = conn.execute(sa.select(calls).where(calls.c.id == call_id)).one()
    assert row.status in ("completed", "canceled")
    assert row.call_length is not None and row.call_length * 60 < 6
    assert pq(env, "SELECT status FROM procrastinate_jobs") == [("aborted",)]


def test_a_stopping_worker_lets_short_calls_end_and_hangs_up_the_rest(env: Env) -> None:
    short, long_ = submit(env, ["+12125550100", "+12125550105"])  # about 2.6 s and 7.3 s
    carrier = Recorder(0.1)
    engine = ProcrastinateEngine(env.settings, env.db)
    worker = CallWorker(env.settings, concurrency=4, carrier=carrier)  # deadline 4 s

    async def scenario() -> float:
        task = asyncio.create_task(worker.run())
        admit(env, engine)
        await until(lambda: len(worker.runner.live) == 2, 30, "both calls placed")
        began = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 30)
        return time.monotonic() - began

    stopped_after = asyncio.run(scenario())
    assert 3.5 < stopped_after < 12
    with env.db.read() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(calls))}
    assert rows[short].state == "ended" and rows[short].error_message != SHUTDOWN_NOTE
    assert rows[long_].state == "ended" and rows[long_].error_message == SHUTDOWN_NOTE
    assert rows[long_].status == "completed"  # answered, then hung up by us
    assert rows[long_].call_length * 60 < 5.5


def test_the_reaper_requeues_the_jobs_of_a_dead_worker(env: Env) -> None:
    fetched, claimed = submit(env, ["+12125550101", "+12125550102"])
    engine = ProcrastinateEngine(env.settings, env.db, reap_interval_s=0)
    admit(env, engine)
    # A worker that fetched both jobs, claimed one call, and died.
    [(dead,)] = pq(
        env,
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - interval '1 hour') RETURNING id",
    )
    for _ in range(2):
        pq(env, "SELECT id FROM procrastinate_fetch_job_v2(ARRAY['calls']::varchar[], %s)", dead)
    with env.db.write() as conn:
        assert lifecycle.claim(conn, claimed, 1, "dead-worker", datetime.now(UTC), 1.0)
    carrier = Recorder(0.0)
    worker = CallWorker(env.settings, concurrency=4, carrier=carrier)

    async def body() -> None:
        await engine.open()
        try:
            assert await engine.reap() == 2
            await until(lambda: states(env)[fetched] == "ended", 20, "re-queued call ran")

            def settled() -> bool:
                return pq(env, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == [
                    (0,)
                ]

            await until(settled, 20, "re-queued jobs ran")
        finally:
            await engine.shutdown(1)

    asyncio.run(_run_worker(worker, body))
    assert carrier.dials == [(fetched, 1)]  # the claimed call is never dialled again
    time.sleep(1.1)  # its lease (1 s) runs out: the reaper ends it as interrupted
    with env.db.write() as conn:
        hopper.reap(conn, datetime.now(UTC), lease_s=1.0, grace_s=60.0)
    with env.db.read() as conn:
        row = conn.execute(sa.select(calls).where(calls.c.id == claimed)).one()
        attempts = conn.execute(sa.select(call_attempts)).all()
    assert row.state == "ended" and "Interrupted" in row.error_message
    assert sorted(a.call_id for a in attempts) == sorted([fetched, claimed])


def test_procrastinate_refuses_sqlite_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs PostgreSQL"):
        Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", engine="procrastinate")
    result = CliRunner().invoke(
        cli_app, ["worker"], env={"CALLFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    )
    assert result.exit_code == 2
    assert "needs PostgreSQL" in result.output


def test_migrate_applies_procrastinate_schema_once(pg_url: str, tmp_path: Path) -> None:
    env = {"CALLFLEET_DATABASE_URL": pg_url, "CALLFLEET_DATA_DIR": str(tmp_path)}
    for _ in range(2):
        result = CliRunner().invoke(cli_app, ["migrate"], env=env)
        assert result.exit_code == 0, result.output
    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
        tables = conn.execute("SELECT count(*) FROM alembic_version").fetchone()
    assert found == (True,)
    assert tables == (1,)


def test_a_worker_takes_no_job_before_its_agent_can_speak(env: Env) -> None:
    """While the readiness check says why not (the agent's engines still loading and
    warming), the worker fetches no job: the admitted calls wait as procrastinate jobs
    and nobody is dialled. Once it says None, every call runs, each once."""
    ids = submit(env, people(3))
    carrier = Recorder(0.0)
    engine = ProcrastinateEngine(env.settings, env.db)
    waiting = ["the AI agent is still loading and warming its speech engines"]
    asked: list[float] = []

    def readiness() -> str | None:
        asked.append(time.monotonic())
        return waiting[0] if waiting else None

    worker = CallWorker(env.settings, concurrency=4, carrier=carrier, readiness=readiness)

    async def body() -> None:
        assert len(admit(env, engine)) == 3
        await asyncio.sleep(2.0)  # ample time for a worker that did not wait to dial
        assert carrier.dials == []
        assert len(asked) >= 5  # it kept asking while it waited
        todo = pq(env, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
        assert todo == [(3,)]
        assert set(states(env).values()) == {"admitted"}
        waiting.clear()
        await until(lambda: set(states(env).values()) == {"ended"}, 30, "calls ended")

    asyncio.run(_run_worker(worker, body))
    assert sorted(carrier.dials) == sorted((i, 1) for i in ids)


def test_the_worker_command_waits_for_the_agent_it_builds(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`callfleet worker` (wiring.build_worker) hands the worker the readiness check
    that comes with its carrier's talker, the one the test above honours."""
    from callfleet import wiring

    def check() -> str | None:
        return None

    carrier = Recorder(0.0)
    monkeypatch.setattr(wiring, "_carrier_and_readiness", lambda _settings: (carrier, check))
    worker = wiring.build_worker(env.settings)
    assert worker.readiness is check
    assert worker.carrier.inner is carrier
