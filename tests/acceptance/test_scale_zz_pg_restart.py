"""The database restarts mid-batch (`pg_ctlcluster ... restart`): the workers and the API
reconnect by themselves and finish the batch; nothing is lost, nothing is dialled
twice, the cap holds, the batch webhook is written once. The calls go over SIP to
`callfleet simulator` in its fast mode, and "dialled twice" and "the cap" are
counted from its own record; SIP calls in the air during the outage carry on.

CAUTION: this restarts the machine's shared PostgreSQL server, so any other test
using it at that moment fails. It is marked `pg_restart` and sorts last; run it in
its own pytest invocation after everything else (`pytest -m pg_restart`).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from test_scale_cluster import (
    Cluster,
    Receiver,
    check_batch,
    cluster,  # noqa: F401 - fixture
    receiver,  # noqa: F401 - fixture
    wait_webhook_once,
)

pytestmark = pytest.mark.pg_restart

CALLS = 300
CAP = 20
HOLD_S = 1.0
"""How long the simulator's people stay on the line: long enough that the calls in
flight reach the cap even when dispatch is slowed by a busy machine."""


def restart_postgres() -> float:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    began = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return time.monotonic() - began


def wait_until_others_are_idle(made: Cluster, limit_s: float = 30) -> None:
    """Courtesy on a shared machine: restart when no other database is busy, if that
    comes within `limit_s` (in CI nothing else runs, so at once)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy = made.pg(
            "SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL "
            "AND datname NOT IN (current_database(), 'postgres') "
            "AND state IN ('active', 'idle in transaction')"
        )[0][0]
        if not busy:
            return
        time.sleep(0.2)


def test_a_database_restart_mid_batch(
    cluster: Cluster,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    # A lease longer than the outage: live calls keep their slots while the server is
    # away, and their heartbeats catch up afterwards.
    cluster.env["CALLFLEET_LEASE_S"] = "15"
    cluster.simulator(hold_s=HOLD_S)
    key = cluster.new_key()
    api = cluster.serve(wait=False)
    cluster.worker("w1", concurrency=15, wait=False)
    cluster.worker("w2", concurrency=15, wait=False)
    cluster.ready()
    cluster.trunk_to_simulator(api, key)
    wait_until_others_are_idle(cluster)
    batch_id = cluster.submit(api, key, CALLS, batch_webhook=f"{receiver.url}/batch")
    cluster.wait_ended(batch_id, int(CALLS * 0.3), timeout=90)
    outage = restart_postgres()
    cluster.wait_ended(batch_id, CALLS, timeout=120)

    verdict = check_batch(cluster, batch_id, CALLS, cap=CAP)
    wait_webhook_once(receiver)
    for proc in cluster.procs:
        assert proc.popen.poll() is None, f"{proc.name} died:\n{cluster.tail(proc)}"
    assert verdict.interrupted == 0, verdict
    assert verdict.statuses == {"completed": CALLS}, verdict  # every number answers
    assert verdict.sip_calls == CALLS, verdict  # one SIP call a number, none redialled
    print(
        f"restart took {outage:.1f} s; peak {verdict.sim_peak}; slowest answer-to-end "
        f"{verdict.slowest_s:.2f} s at the phones, {verdict.db_slowest_s:.2f} s in our "
        f"database; {dict(verdict.statuses)}"
    )
