"""Leader election for the hopper on the real PostgreSQL: one leader, quick takeover.

Two electors (or two whole dispatchers) share one database: exactly one leads; when
the leader's connection is killed (`pg_terminate_backend`, what a dead process or a
cut network amounts to) the other leads within seconds, and the old leader stops
admitting at once, before it has even noticed: its next admission pass is fenced.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from callfleet.config import Settings
from callfleet.dispatch.leader import NotLeaderError, PgLeader
from callfleet.dispatch.procrastinate_engine import libpq_url
from callfleet.dispatch.service import Dispatcher
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.store.tables import call_attempts, calls
from callfleet.wiring import create_app

ALWAYS = {"start": "00:00", "end": "24:00"}


def kill_backend(url: str, pid: int | None) -> None:
    assert pid is not None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # pg_terminate_backend only signals: the session (and its advisory lock) lives
        # on until the backend has exited. Wait for that, as a real crash would be.
        deadline = time.monotonic() + 10
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {pid} still alive 10 s after its termination")
            time.sleep(0.01)


async def until(predicate: Any, limit_s: float, what: str) -> float:
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > limit_s:
            raise AssertionError(f"{what}: not within {limit_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - began


def test_one_leader_and_a_takeover_when_its_connection_dies(pg_url: str) -> None:
    async def scenario() -> float:
        a = PgLeader(pg_url, "a", interval_s=0.2)
        b = PgLeader(pg_url, "b", interval_s=0.2)
        await a.start()
        await b.start()
        try:
            assert a.is_leader and not b.is_leader
            await asyncio.sleep(0.5)
            assert a.is_leader and not b.is_leader  # b keeps trying, and fails
            kill_backend(pg_url, a.backend_pid)
            took = await until(lambda: b.is_leader, 5, "b takes over")
            assert not a.is_leader
            await asyncio.sleep(1.0)  # a reconnects after its cool-down, as a follower
            assert b.is_leader and not a.is_leader
            await b.close()  # a clean stop hands over too
            await until(lambda: a.is_leader, 5, "a takes over again")
            return took
        finally:
            await a.close()
            await b.close()

    took = asyncio.run(scenario())
    assert took < 3


def _env(pg_url: str, tmp_path: Path) -> tuple[Settings, Database, str]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_url,
        account_concurrency=5,
        default_cps=1000,
        hopper_interval_s=0.05,
        leader_interval_s=0.2,
        simulator_time_scale=0.01,
        log_level="warning",
    )
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.write() as conn:
        account = create_account(conn, "leader")
        key = create_key(conn, account.id, "leader")
    return settings, db, key


async def _submit(settings: Settings, db: Database, key: str, numbers: list[str]) -> str:
    app = create_app(settings, dispatch=False, db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        resp = await client.post(
            "/v1/batches",
            headers={"authorization": key},
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": n} for n in numbers],
                "calling_window": ALWAYS,
            },
        )
    assert resp.status_code == 200, resp.text
    batch_id: str = resp.json()["batch_id"]
    return batch_id


def _people(first: int, n: int) -> list[str]:
    codes = ["212", "213", "312", "415", "503", "617", "702", "808"]
    return [f"+1{codes[i // 40]}55501{i % 40:02d}" for i in range(first, first + n)]


def _left(db: Database, batch_id: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    calls.c.batch_id == batch_id, calls.c.state != "ended"
                )
            ).scalar()
            or 0
        )


def test_only_the_leader_admits_and_the_other_takes_over(pg_url: str, tmp_path: Path) -> None:
    settings, db, key = _env(pg_url, tmp_path)

    async def scenario() -> tuple[Dispatcher, Dispatcher, float]:
        first = Dispatcher(db, settings, SimulatedCarrier(time_scale=0.01))
        second = Dispatcher(db, settings, SimulatedCarrier(time_scale=0.01))
        await first.start()
        await second.start()
        try:
            assert first.leader.is_leader and not second.leader.is_leader
            batch = await _submit(settings, db, key, _people(0, 30))
            await until(lambda: _left(db, batch) == 0, 60, "first batch done")
            assert first.metrics.admitted._value.get() == 30
            assert second.metrics.admitted._value.get() == 0

            batch = await _submit(settings, db, key, _people(30, 60))
            await until(lambda: first.metrics.admitted._value.get() >= 40, 30, "admissions")
            assert isinstance(first.leader, PgLeader)
            kill_backend(pg_url, first.leader.backend_pid)
            took = await until(lambda: second.leader.is_leader, 5, "takeover")
            await until(lambda: _left(db, batch) == 0, 60, "second batch done")
            return first, second, took
        finally:
            await second.stop()
            await first.stop()

    first, second, took = asyncio.run(scenario())
    assert took < 3
    admitted = first.metrics.admitted._value.get() + second.metrics.admitted._value.get()
    assert second.metrics.admitted._value.get() > 0
    assert admitted == 90
    with db.read() as conn:
        attempts = conn.execute(sa.select(call_attempts.c.call_id)).all()
    assert len(attempts) == len({a.call_id for a in attempts}) == 90
    db.dispose()


def test_a_leader_whose_lock_is_gone_admits_nothing(pg_url: str, tmp_path: Path) -> None:
    settings, db, key = _env(pg_url, tmp_path)

    async def scenario() -> None:
        # A check interval so long that the leader never notices by itself.
        leader = PgLeader(libpq_url(settings.sqlalchemy_url), "stale", interval_s=600)
        dispatcher = Dispatcher(db, settings, SimulatedCarrier(0.0), leader=leader)
        await leader.start()
        dispatcher.writer.start()
        try:
            assert leader.is_leader
            await _submit(settings, db, key, _people(0, 5))
            kill_backend(pg_url, leader.backend_pid)
            with pytest.raises(NotLeaderError):
                await dispatcher.admit_once()
            assert leader.is_leader  # it has not noticed yet, and still admitted nothing
        finally:
            dispatcher.writer.stop()
            await leader.close()

    asyncio.run(scenario())
    with db.read() as conn:
        states = {r.state for r in conn.execute(sa.select(calls.c.state))}
    assert states == {"queued"}
    db.dispose()


def test_sqlite_has_one_trivial_leader(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}")
    db = Database(settings.sqlalchemy_url)
    migrate(db)

    async def scenario() -> bool:
        dispatcher = Dispatcher(db, settings, SimulatedCarrier(0.0))
        await dispatcher.start()
        try:
            with db.write() as conn:
                dispatcher.leader.fence(conn)  # never refuses
            await dispatcher.admit_once()
            return dispatcher.leader.is_leader
        finally:
            await dispatcher.stop()

    assert asyncio.run(scenario())
    db.dispose()
