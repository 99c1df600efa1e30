"""The dispatcher against real databases: caps, pacing, retries, watchdog, completion.

The carrier is the real phone simulator wrapped in a recorder that notes when each
call is in the air, so concurrency and pacing are measured where a carrier would
see them, not read back from our own bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa

from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.tables import call_attempts, calls, webhook_deliveries
from callfleet.telephony.carrier import CallEvents, DialRequest, DialResult, Outcome
from conftest import Server, wait_for

ALWAYS = {"start": "00:00", "end": "24:00"}


class RecordingCarrier:
    """The simulator, plus a record of every dial and of concurrency."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.active = 0
        self.max_active = 0
        self.dials: list[tuple[str, int, float]] = []

    def describe(self) -> str:
        return "recording " + self.inner.describe()

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.dials.append((request.to_number, request.attempt, time.monotonic()))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            result: DialResult = await self.inner.place_call(request, events)
            return result
        finally:
            self.active -= 1


class StuckCarrier:
    """A carrier that never returns and ignores hangups: the watchdog must end its calls."""

    def describe(self) -> str:
        return "stuck"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        await events.answered()
        await asyncio.Event().wait()  # never set: this carrier never returns by itself
        raise AssertionError("unreachable")


class CongestedCarrier:
    """A network that always answers 503 with Retry-After 0."""

    def __init__(self) -> None:
        self.dials: list[int] = []

    def describe(self) -> str:
        return "congested"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.dials.append(request.attempt)
        return DialResult(
            Outcome.FAILED, sip_code=503, retry_after_s=0.0, error_message="503 congested"
        )


def _send(server: Server, key: str, numbers: list[str], **extra: Any) -> str:
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": n} for n in numbers],
                "calling_window": ALWAYS,
                **extra,
            },
        )
    assert resp.status_code == 200, resp.text
    batch_id: str = resp.json()["batch_id"]
    return batch_id


def _wait_done(server: Server, key: str, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    with server.client(key) as client:

        def done() -> dict[str, Any] | None:
            d: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
            a = d["analysis"]
            return d if a["completed_calls"] == a["total_calls"] else None

        result: dict[str, Any] = wait_for(done, timeout=timeout)
        return result


def _people(n: int) -> list[str]:
    area_codes = ["212", "213", "312", "415", "503", "617", "702", "808"]
    return [f"+1{area_codes[i // 40]}55501{i % 40:02d}" for i in range(n)]


def test_concurrency_never_exceeds_the_account_cap(server_factory: Any) -> None:
    carrier = RecordingCarrier(SimulatedCarrier(time_scale=0.01))
    server = server_factory(carrier=carrier, account_concurrency=3, default_cps=1000)
    key = server.new_key()
    batch_id = _send(server, key, _people(24))
    details = _wait_done(server, key, batch_id)
    assert all(c["status"] == "completed" for c in details["call_data"])
    assert len(carrier.dials) == 24
    assert carrier.max_active <= 3
    assert carrier.max_active == 3  # the cap is reached, so the check above means something


def test_calls_per_second_is_paced_per_caller_id(server_factory: Any) -> None:
    carrier = RecordingCarrier(SimulatedCarrier(time_scale=0.0))
    server = server_factory(carrier=carrier, account_concurrency=50, default_cps=4)
    key = server.new_key()
    batch_id = _send(server, key, _people(12))
    _wait_done(server, key, batch_id)
    starts = sorted(t for _, _, t in carrier.dials)
    assert len(starts) == 12
    # A bucket of 4 tokens refilled at 4/s: any 1-second span holds at most 4 + 4 starts,
    # and 12 calls cannot all start in under (12 - 4) / 4 = 2 s.
    for i, t0 in enumerate(starts):
        assert sum(1 for t in starts[i:] if t - t0 < 1.0) <= 8
    assert starts[-1] - starts[0] >= 1.8


def test_busy_is_retried_by_policy_and_declined_never(server_factory: Any) -> None:
    carrier = RecordingCarrier(SimulatedCarrier(time_scale=0.0))
    server = server_factory(carrier=carrier, default_cps=1000)
    key = server.new_key()
    busy, declined = "+12125550161", "+12125550183"
    retry = {"max_attempts": 3, "delay_minutes": 0, "on": ["busy", "no-answer"]}
    batch_id = _send(server, key, [busy, declined], retry=retry)
    details = _wait_done(server, key, batch_id)
    by_number = {c["to"]: c for c in details["call_data"]}
    assert by_number[busy]["status"] == "busy"
    assert by_number[busy]["attempt"] == 3
    assert by_number[declined]["status"] == "declined"
    assert by_number[declined]["attempt"] == 1
    dials = [(n, a) for n, a, _ in carrier.dials]
    assert sorted(dials) == sorted([(busy, 1), (busy, 2), (busy, 3), (declined, 1)])
    with server.db.read() as conn:
        rows = conn.execute(sa.select(call_attempts.c.attempt, call_attempts.c.status)).all()
    assert sorted(r.status for r in rows) == ["busy", "busy", "busy", "declined"]


def test_watchdog_ends_a_call_whose_carrier_hangs(server_factory: Any) -> None:
    server = server_factory(
        carrier=StuckCarrier(), watchdog_grace_s=0.3, lease_s=5, ring_timeout_s=0.2
    )
    key = server.new_key()
    batch_id = _send(server, key, ["+12125550101"], max_duration=0.01)
    details = _wait_done(server, key, batch_id, timeout=30)
    call = details["call_data"][0]
    assert call["status"] == "failed"
    assert "Watchdog" in call["error_message"]


def test_batch_completes_exactly_once(server_factory: Any, tmp_path: Any) -> None:
    server = server_factory(account_concurrency=200, default_cps=10_000)
    key = server.new_key()
    # A receiver that refuses everything: deliveries stay recorded in the outbox.
    hook = "http://127.0.0.1:9/batch-done"
    batch_id = _send(server, key, _people(120), batch_webhook=hook)
    _wait_done(server, key, batch_id)
    with server.db.read() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(webhook_deliveries)
            .where(
                webhook_deliveries.c.batch_id == batch_id,
                webhook_deliveries.c.event == "batch.completed",
            )
        ).scalar()
        remaining = conn.execute(
            sa.select(sa.func.count()).select_from(calls).where(calls.c.state != "ended")
        ).scalar()
    assert count == 1
    assert remaining == 0


def test_network_retries_do_not_use_attempts_but_are_capped(server_factory: Any) -> None:
    carrier = CongestedCarrier()
    server = server_factory(carrier=carrier, default_cps=1000)
    key = server.new_key()
    batch_id = _send(server, key, ["+12125550101"])
    details = _wait_done(server, key, batch_id)
    call = details["call_data"][0]
    # The first dial plus three retries the network asked for, then a plain failure.
    assert carrier.dials == [1, 2, 3, 4]
    assert call["status"] == "failed"
    assert "gave up after 3 retries the network asked for" in call["error_message"]


def test_live_calls_never_exceed_the_process_cap(server_factory: Any) -> None:
    # Three accounts, each under its own cap of 10: without a process-wide cap they
    # would put 24 calls in the air at once. Every call still completes: a call over
    # the cap waits in the queue for a slot, it is never failed for it.
    carrier = RecordingCarrier(SimulatedCarrier(time_scale=0.01))
    server = server_factory(
        carrier=carrier, account_concurrency=10, default_cps=1000, max_live_calls=4
    )
    keys = [server.new_key(f"tenant-{i}") for i in range(3)]
    people = _people(24)
    batches = [(key, _send(server, key, people[i * 8 : (i + 1) * 8])) for i, key in enumerate(keys)]
    for key, batch_id in batches:
        details = _wait_done(server, key, batch_id)
        assert all(c["status"] == "completed" for c in details["call_data"])
    assert len(carrier.dials) == 24
    assert carrier.max_active <= 4
    assert carrier.max_active == 4  # the cap is reached, so the check above means something


def test_the_default_live_call_cap_follows_what_a_call_costs() -> None:
    from callfleet.config import Settings
    from callfleet.dispatch.limits import default_max_live_calls, max_live_calls

    talking = {"carrier": "sip", "simulator_time_scale": 1.0}
    assert default_max_live_calls(Settings(**talking), cpus=2) == 4  # local models
    hosted = Settings(**talking, stt_provider="deepgram", tts_provider="cartesia")
    assert default_max_live_calls(hosted, cpus=2) == 50
    assert default_max_live_calls(Settings(carrier="simulator-nomedia"), cpus=2) == 10_000
    silent = Settings(carrier="sip", agent_enabled=False, rtp_port_min=20000, rtp_port_max=20199)
    assert default_max_live_calls(silent, cpus=2) == 100  # one RTP port pair per call
    assert max_live_calls(Settings(**talking, max_live_calls=7)) == 7
