"""A submission killed half-way: `callfleet serve` gets SIGKILL while it inserts a
large batch (seen in `pg_stat_activity`); afterwards the batch exists whole or not at
all, in the database and through a restarted API.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from test_scale_cluster import ALWAYS, Cluster, cluster, numbers  # noqa: F401 - fixture

ROWS = 20_000


def _inserting(c: Cluster) -> bool:
    rows = c.pg(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query ILIKE 'INSERT INTO calls%%' AND state IN ('active', 'idle in transaction')"
    )
    return bool(rows[0][0])


def _counts(c: Cluster) -> tuple[int, int, list[int]]:
    batches = c.pg("SELECT total_calls FROM batches")
    calls = c.pg("SELECT count(*) FROM calls")[0][0]
    return len(batches), int(calls), [int(b[0]) for b in batches]


def test_a_submission_killed_half_way_leaves_all_or_nothing(cluster: Cluster) -> None:  # noqa: F811
    key = cluster.new_key()
    api = cluster.serve("api")
    body = {
        "base_prompt": "Hi",
        "call_data": [{"phone_number": n} for n in numbers(ROWS, endings=range(60))],
        "calling_window": ALWAYS,
        "start_time": "2099-01-01T00:00:00Z",  # held: the hopper leaves them alone
    }
    headers = {"authorization": key}
    outcome: list[Any] = []

    def post() -> None:
        try:
            outcome.append(
                httpx.post(f"{api.base}/v1/batches", headers=headers, json=body, timeout=120)
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=post)
    sender.start()
    deadline = time.monotonic() + 60
    while not _inserting(cluster):
        assert time.monotonic() < deadline, "never saw the INSERT"
        assert sender.is_alive(), f"the request ended before its insert was seen: {outcome}"
        time.sleep(0.005)
    cluster.kill(api)
    sender.join(timeout=30)
    assert isinstance(outcome[0], httpx.HTTPError), outcome  # the client saw the crash

    found, calls, totals = _counts(cluster)
    assert (found, calls) == (0, 0) or (found == 1 and totals == [ROWS] and calls == ROWS), (
        found,
        calls,
        totals,
    )
    killed_mid_insert = found == 0

    # A restarted API shows the same: no batch, or the whole one.
    again = cluster.serve("api-again")
    listed = httpx.get(f"{again.base}/v1/batches", headers=headers, timeout=30)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["batches"]) == found
    print(f"killed while inserting {ROWS} rows; nothing left behind: {killed_mid_insert}")
    resent = httpx.post(f"{again.base}/v1/batches", headers=headers, json=body, timeout=120)
    assert resent.status_code == 200, resent.text
    found, calls, totals = _counts(cluster)
    assert calls == sum(totals) == ROWS * found
