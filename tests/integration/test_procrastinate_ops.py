"""Operations endpoints on real databases: `/healthz`, `/readyz`, `/metrics`.

`/metrics` is scraped from a running server with calls in the air and parsed with
prometheus-client's own parser; `/readyz` answers 503 with a reason when the
schema is behind, procrastinate's schema is missing, or the database is down.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callfleet.config import Settings
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.wiring import create_app
from conftest import wait_for

ALWAYS = {"start": "00:00", "end": "24:00"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_while_calls_are_live(server_factory: Any) -> None:
    server = server_factory(
        carrier=SimulatedCarrier(time_scale=1.0),  # real durations: calls stay live
        account_concurrency=2,
        default_cps=1000,
    )
    key = server.new_key()
    numbers = [f"+1212555010{i}" for i in range(6)]
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": n} for n in numbers],
                "calling_window": ALWAYS,
                "webhook": "http://127.0.0.1:9/never",  # deliveries pile up: a backlog
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]

        def two_live() -> bool:
            d = client.get(f"/v1/batches/{batch_id}").json()
            return bool(d["analysis"]["in_progress_calls"] == 2)

        wait_for(two_live, timeout=30)
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "hopper_leader": True}
        scraped = client.get("/metrics")
        stop = client.post(f"/v1/batches/{batch_id}/stop")
        assert stop.status_code == 200, stop.text
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    found = samples(scraped.text)
    account_live = {k: v for k, v in found.items() if k[0] == "callfleet_live_calls"}
    assert list(account_live.values()) == [2.0]
    worker_live = {k: v for k, v in found.items() if k[0] == "callfleet_worker_live_calls"}
    assert list(worker_live.values()) == [2.0]
    [(_, labels)] = worker_live
    assert dict(labels)["worker"].endswith(f":{os.getpid()}")
    queued = found[("callfleet_calls", (("state", "queued"), ("status", "")))]
    assert queued == 4.0
    assert found[("callfleet_hopper_lag_seconds", ())] > 0  # due calls wait for a slot
    assert found[("callfleet_calls_admitted_total", ())] >= 2
    assert found[("callfleet_hopper_leader", ())] == 1.0
    assert found[("callfleet_database_up", ())] == 1.0
    assert ("callfleet_webhook_backlog", ()) in found
    assert ("process_resident_memory_bytes", ()) in found


def _app_client(settings: Settings, db: Database) -> httpx.AsyncClient:
    app = create_app(settings, dispatch=False, db=db)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def _get(settings: Settings, db: Database, path: str) -> httpx.Response:
    async with _app_client(settings, db) as client:
        return await client.get(path)


def test_readyz_says_why_it_is_not_ready(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=pg_url)
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    try:
        assert asyncio.run(_get(settings, db, "/readyz")).status_code == 200
        # The procrastinate engine also needs procrastinate's schema.
        pq_settings = Settings(data_dir=tmp_path, database_url=pg_url, engine="procrastinate")
        resp = asyncio.run(_get(pq_settings, db, "/readyz"))
        assert resp.status_code == 503
        assert "procrastinate" in resp.json()["reason"]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0001'")
        resp = asyncio.run(_get(settings, db, "/readyz"))
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "unavailable"
        assert "0001" in body["reason"] and "callfleet migrate" in body["reason"]
        assert asyncio.run(_get(settings, db, "/healthz")).status_code == 200
    finally:
        db.dispose()


def test_readyz_and_metrics_when_the_database_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    url = f"postgresql://postgres@127.0.0.1:{port}/nothing"
    settings = Settings(data_dir=tmp_path, database_url=url)
    db = Database(settings.sqlalchemy_url)
    try:
        resp = asyncio.run(_get(settings, db, "/readyz"))
        assert resp.status_code == 503
        assert "not reachable" in resp.json()["reason"]
        metrics = asyncio.run(_get(settings, db, "/metrics"))
        assert metrics.status_code == 200
        assert samples(metrics.text)[("callfleet_database_up", ())] == 0.0
        assert asyncio.run(_get(settings, db, "/healthz")).json() == {"status": "ok"}
    finally:
        db.dispose()


@pytest.mark.parametrize("held", [True, False])
def test_hopper_lag_counts_only_due_calls(pg_url: str, tmp_path: Path, held: bool) -> None:
    from callfleet.store.accounts import create_account, create_key

    settings = Settings(data_dir=tmp_path, database_url=pg_url)
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.write() as conn:
        account = create_account(conn, "lag")
        key = create_key(conn, account.id, "lag")
    body: dict[str, Any] = {
        "base_prompt": "Hi",
        "call_data": [{"phone_number": "+12125550101"}],
        "start_time": "2099-01-01T00:00:00Z" if held else None,
    }
    if not held:
        body.pop("start_time")
        body["calling_window"] = ALWAYS

    async def scenario() -> httpx.Response:
        async with _app_client(settings, db) as client:
            sent = await client.post("/v1/batches", headers={"authorization": key}, json=body)
            assert sent.status_code == 200, sent.text
            await asyncio.sleep(0.3)
            return await client.get("/metrics")

    try:
        found = samples(asyncio.run(scenario()).text)
    finally:
        db.dispose()
    lag = found[("callfleet_hopper_lag_seconds", ())]
    assert found[("callfleet_calls", (("state", "queued"), ("status", "")))] == 1.0
    if held:
        assert lag == 0.0  # waiting for its start time is not lag
    else:
        assert 0.2 < lag < 30
