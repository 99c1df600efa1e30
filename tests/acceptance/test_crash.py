"""`callfleet serve` killed with SIGKILL mid-batch, then restarted: nothing is lost,
nothing is dialled twice, and the calls that were in the air end as interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from callfleet.store.db import Database
from callfleet.store.tables import call_attempts
from conftest import free_port, wait_for

BIN = Path(sys.executable).parent / "callfleet"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CALLFLEET_DATA_DIR=str(tmp_path),
        CALLFLEET_SIMULATOR_TIME_SCALE="0.1",
        CALLFLEET_ACCOUNT_CONCURRENCY="4",
        CALLFLEET_DEFAULT_CPS="100",
        CALLFLEET_LEASE_S="2",
        CALLFLEET_LOG_LEVEL="warning",
    )
    return env


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30, interval=0.1)
    return proc


def test_sigkill_mid_batch_then_restart(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = subprocess.run(
        [str(BIN), "keys", "create", "--name", "crash"], env=env, capture_output=True, check=True
    )
    key = out.stdout.decode().strip().splitlines()[-1]
    port = free_port()
    proc = _serve(env, port)
    base = f"http://127.0.0.1:{port}"
    numbers = [f"+1{ac}55501{i:02d}" for ac in ("212", "415") for i in range(10)]
    try:
        resp = httpx.post(
            f"{base}/v1/batches",
            headers={"authorization": key},
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": n} for n in numbers],
                "calling_window": {"start": "00:00", "end": "24:00"},
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]

        def some_live() -> bool:
            d = httpx.get(f"{base}/v1/batches/{batch_id}", headers={"authorization": key}).json()
            return bool(d["analysis"]["in_progress_calls"] >= 2)

        wait_for(some_live, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    proc = _serve(env, port)
    try:

        def finished() -> dict[str, Any] | None:
            d: dict[str, Any] = httpx.get(
                f"{base}/v1/batches/{batch_id}", headers={"authorization": key}
            ).json()
            a = d["analysis"]
            return d if a["completed_calls"] == a["total_calls"] else None

        details = wait_for(finished, timeout=90, interval=0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

    statuses = [c["status"] for c in details["call_data"]]
    interrupted = [c for c in details["call_data"] if "Interrupted" in c["error_message"]]
    assert len(statuses) == len(numbers)
    assert interrupted, "the calls in the air at the kill must end as interrupted"
    assert all(c["status"] == "failed" for c in interrupted)
    assert statuses.count("completed") == len(numbers) - len(interrupted)
    db = Database(f"sqlite:///{tmp_path / 'callfleet.db'}")
    try:
        with db.read() as conn:
            attempts = conn.execute(
                sa.select(call_attempts.c.call_id, call_attempts.c.attempt)
            ).all()
    finally:
        db.dispose()
    # One dial per call: interrupted calls are never redialled.
    assert len(attempts) == len(numbers)
    assert len({a.call_id for a in attempts}) == len(numbers)
