"""The leader dies: two `callfleet serve` processes share the database; the one holding
the hopper's advisory lock is killed with SIGKILL mid-batch; the other takes over
admission within seconds and the batch completes with every promise intact, checked
against what `callfleet simulator` (the account's SIP trunk, in its fast mode)
received.
"""

from __future__ import annotations

import time

from test_scale_cluster import (
    Cluster,
    Receiver,
    check_batch,
    cluster,  # noqa: F401 - fixture
    receiver,  # noqa: F401 - fixture
    wait_webhook_once,
)

from conftest import wait_for

CALLS = 300
CAP = 20
HOLD_S = 1.0
"""How long the simulator's people stay on the line: long enough that the calls in
flight reach the cap even when dispatch is slowed by a busy machine."""


def test_the_leader_dies_and_another_api_process_takes_over(
    cluster: Cluster,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    cluster.simulator(hold_s=HOLD_S)
    key = cluster.new_key()
    first = cluster.serve("api1", wait=False)
    second = cluster.serve("api2", wait=False)
    cluster.worker("w1", concurrency=15, wait=False)
    cluster.worker("w2", concurrency=15, wait=False)
    cluster.ready()
    cluster.trunk_to_simulator(first, key)
    by_pid = {first.pid: first, second.pid: second}
    leader_pid = wait_for(cluster.leader_pid, timeout=10)
    assert leader_pid in by_pid
    leader = by_pid[leader_pid]
    survivor = second if leader is first else first

    batch_id = cluster.submit(survivor, key, CALLS, batch_webhook=f"{receiver.url}/batch")
    cluster.wait_ended(batch_id, int(CALLS * 0.3), timeout=90)
    cluster.kill(leader)
    killed_at = time.monotonic()
    new_leader = wait_for(
        lambda: (pid := cluster.leader_pid()) is not None and pid != leader_pid and pid,
        timeout=15,
        interval=0.05,
    )
    takeover = time.monotonic() - killed_at
    assert new_leader == survivor.pid
    cluster.wait_ended(batch_id, CALLS, timeout=120)

    verdict = check_batch(cluster, batch_id, CALLS, cap=CAP, killed=True)
    wait_webhook_once(receiver)
    assert verdict.interrupted == 0  # the workers were untouched: no call was cut
    assert takeover < 5
    assert verdict.sip_calls == CALLS  # one SIP call a number
    print(
        f"takeover in {takeover:.2f} s; peak {verdict.sim_peak}; slowest answer-to-end "
        f"{verdict.slowest_s:.2f} s at the phones, {verdict.db_slowest_s:.2f} s in our "
        f"database; {dict(verdict.statuses)}"
    )
