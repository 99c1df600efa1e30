"""kill -9 of one of two workers mid-batch, then a restart: the issue's promises hold.

Real processes: one `callfleet serve` and two `callfleet worker` on PostgreSQL with
the procrastinate engine, placing real SIP calls to `callfleet simulator` in its fast
mode (answered calls last about 0.2 s; one number in ten is busy or declines). One
worker is killed with SIGKILL when about 40 % of the batch is done and started
again. Afterwards: every call is terminal; no number received INVITEs for more SIP
calls than its call has attempts in `call_attempts`, nor two INVITE transactions for
one attempt, counted from the simulator's own record; the simulator never held more
concurrent calls than the account's cap (and never refused one with 503); the batch
webhook was written once and its receiver saw one `webhook-id`. The calls that were
in the air on the killed worker end `interrupted` and are never redialled.
"""

from __future__ import annotations

import time

from test_scale_cluster import (
    SLOW_S,
    Cluster,
    Receiver,
    check_batch,
    cluster,  # noqa: F401 - fixture
    receiver,  # noqa: F401 - fixture
    wait_webhook_once,
)

CALLS = 300
CAP = 20
HOLD_S = 1.0
"""How long the simulator's people stay on the line: long enough that the calls in
flight reach the cap even when dispatch is slowed by a busy machine."""


def test_sigkill_of_a_worker_mid_batch(cluster: Cluster, receiver: Receiver) -> None:  # noqa: F811
    cluster.simulator(hold_s=HOLD_S)
    key = cluster.new_key()
    api = cluster.serve(wait=False)
    doomed = cluster.worker("w1", concurrency=15, wait=False)
    cluster.worker("w2", concurrency=15, wait=False)
    cluster.ready()
    cluster.trunk_to_simulator(api, key)
    began = time.monotonic()
    batch_id = cluster.submit(
        api, key, CALLS, refusing_every=10, batch_webhook=f"{receiver.url}/batch"
    )
    cluster.wait_ended(batch_id, int(CALLS * 0.4), timeout=90)
    live_on_doomed = cluster.pg(
        "SELECT count(*) FROM calls WHERE state IN ('dialing', 'live') AND lease_owner LIKE %s",
        f"%:{doomed.pid}",
    )[0][0]
    cluster.kill(doomed)
    cluster.worker("w1-again", concurrency=15)
    cluster.wait_ended(batch_id, CALLS, timeout=120)
    took = time.monotonic() - began

    verdict = check_batch(cluster, batch_id, CALLS, cap=CAP, killed=True)
    wait_webhook_once(receiver)
    assert live_on_doomed > 0, "the kill should catch calls in the air"
    assert verdict.interrupted >= 1
    assert verdict.interrupted <= live_on_doomed + 15  # at most what the dead worker held
    assert verdict.sim_peak >= CAP // 2  # the cap was actually reached for, or it proves little
    print(
        f"{CALLS} calls in {took:.1f} s; killed worker had {live_on_doomed} live; "
        f"interrupted {verdict.interrupted}; peak {verdict.sim_peak} (cap {CAP}); "
        f"{verdict.retransmitted} INVITE retransmissions; slowest answer-to-end "
        f"{verdict.slowest_s:.2f} s at the phones ({verdict.slow} over {SLOW_S:g} s), "
        f"{verdict.db_slowest_s:.2f} s in our database; {dict(verdict.statuses)}"
    )
