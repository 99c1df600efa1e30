"""Issue 10, items 2-6, through the HTTP server and the real dispatcher, on SQLite and
PostgreSQL: the operator's calling hours and multi-zone windows under a frozen clock,
the daily cap on a callee across batches and single calls, caller-ID pools choosing
local numbers and skipping a paused one, and auto-pause of a caller ID that nobody
answers (the simulator's no-answer numbers, XX 70-79)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import Server, wait_for

from callfleet.api.routes import batches as batch_routes
from callfleet.api.routes import calls as call_routes
from callfleet.dispatch import service
from callfleet.store.numbers import pause_number
from callfleet.store.tables import call_attempts, calls, numbers

ALWAYS = {"start": "00:00", "end": "24:00"}
TCPA = "08:00-21:00"
"""The production default (the test servers are a lab, with the floor off)."""
REAL_NY = "+12122345678"
"""A valid New York number outside the simulator's fictional range: the floor applies."""
TOLL_FREE = "+18005550100"
"""Toll-free: its callee may be anywhere from New York to Honolulu."""


class FrozenClock:
    """The API's and the hopper's `utcnow`, set by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
        self.now = now
        for module in (batch_routes, call_routes, service):
            monkeypatch.setattr(module, "utcnow", lambda: self.now)


def _batch(client: Any, rows: list[dict[str, Any]], **fields: Any) -> Any:
    return client.post("/v1/batches", json={"base_prompt": "Hi", "call_data": rows, **fields})


def _call(client: Any, call_id: str) -> dict[str, Any]:
    details: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
    return details


def _batch_calls(client: Any, batch_id: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = client.get(f"/v1/batches/{batch_id}").json()["call_data"]
    return calls


def _done(client: Any, batch_id: str) -> list[dict[str, Any]]:
    def finished() -> list[dict[str, Any]] | None:
        calls = _batch_calls(client, batch_id)
        return calls if all(c["completed"] for c in calls) else None

    result: list[dict[str, Any]] = wait_for(finished, timeout=60)
    return result


def test_the_operator_floor_narrows_a_tenant_window_and_spares_fictional_numbers(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FrozenClock(monkeypatch, datetime(2026, 12, 7, 12, 30, tzinfo=UTC))  # 07:30 EST
    server: Server = server_factory(calling_hours=TCPA)
    wide = {"start": "07:00", "end": "22:00"}
    with server.client(server.new_key()) as client:
        resp = _batch(
            client,
            [{"phone_number": REAL_NY}, {"phone_number": "+12125550101"}],
            calling_window=wide,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert any(
            w.startswith("calling_window: narrowed") and "08:00-21:00" in w
            for w in body["warnings"]
        )
        # The fictional number is exempt (07:30 is inside the tenant's 07:00-22:00);
        # the real one waits for 08:00 in New York.
        assert body["schedule"]["dial_now"] == 1
        assert body["schedule"]["next_dial_at"] == "2026-12-07T13:00:00+00:00"
        calls = {c["to"]: c for c in _batch_calls(client, body["batch_id"])}
        assert calls[REAL_NY]["queue_status"] == "queued"
        assert calls[REAL_NY]["scheduled_for"] == "2026-12-07T13:00:00+00:00"
        wait_for(lambda: _batch_calls(client, body["batch_id"])[1]["completed"])
        assert clock.now.hour == 12
        assert _call(client, calls[REAL_NY]["call_id"])["queue_status"] == "queued"

        outside = _batch(
            client, [{"phone_number": REAL_NY}], calling_window={"start": "21:30", "end": "23:00"}
        )
        assert outside.status_code == 400
        assert outside.json()["errors"][0]["field"] == "calling_window"
        assert "CALLFLEET_CALLING_HOURS" in outside.json()["errors"][0]["message"]


def test_calling_hours_off_leaves_the_tenant_window_alone(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    FrozenClock(monkeypatch, datetime(2026, 12, 7, 12, 30, tzinfo=UTC))
    server = server_factory(calling_hours="off")
    with server.client(server.new_key()) as client:
        resp = _batch(
            client, [{"phone_number": REAL_NY}], calling_window={"start": "07:00", "end": "22:00"}
        )
        assert resp.status_code == 200, resp.text
        assert not [w for w in resp.json()["warnings"] if "narrowed" in w]
        assert resp.json()["schedule"]["dial_now"] == 1


def test_a_toll_free_callee_is_rung_only_when_every_us_zone_is_open(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10:00 in New York, 05:00 in Honolulu: the default 09:00-20:00 is open in the
    # first only. It opens everywhere at 09:00 in Honolulu, 19:00 UTC (14:00 EST),
    # never at 09:00 in America/Adak, where +1 800 used to put every callee.
    clock = FrozenClock(monkeypatch, datetime(2026, 12, 7, 15, 0, tzinfo=UTC))
    server: Server = server_factory(calling_hours=TCPA)
    with server.client(server.new_key()) as client:
        resp = _batch(client, [{"phone_number": TOLL_FREE}])
        assert resp.status_code == 200, resp.text
        assert resp.json()["schedule"] == {
            "dial_now": 0,
            "waiting_for_window_or_start_time": 1,
            "next_dial_at": "2026-12-07T19:00:00+00:00",
        }
        call_id = _batch_calls(client, resp.json()["batch_id"])[0]["call_id"]
        # With the given zone of the callee, the window is read there alone.
        told = _batch(client, [{"phone_number": TOLL_FREE, "timezone": "America/New_York"}])
        assert told.json()["schedule"]["dial_now"] == 1
        told_id = _batch_calls(client, told.json()["batch_id"])[0]["call_id"]
        wait_for(lambda: _call(client, told_id)["completed"])
        assert _call(client, call_id)["queue_status"] == "queued"
        clock.now = datetime(2026, 12, 7, 19, 0, 1, tzinfo=UTC)
        wait_for(lambda: _call(client, call_id)["completed"])
        assert _call(client, call_id)["variables"]["timezone"] == ""  # several zones, none guessed


def test_the_daily_cap_holds_a_callee_across_batches_and_single_calls(
    server_factory: Any,
) -> None:
    server = server_factory(number_daily_cap=2, default_cps=1000)
    callee = "+12125550101"
    with server.client(server.new_key()) as client:
        first = _batch(client, [{"phone_number": callee}], calling_window=ALWAYS).json()
        _done(client, first["batch_id"])
        single = client.post(
            "/v1/calls", json={"phone_number": callee, "task": "Hi", "calling_window": ALWAYS}
        )
        assert single.status_code == 200, single.text
        wait_for(lambda: _call(client, single.json()["call_id"])["completed"])
        third = _batch(client, [{"phone_number": callee}], calling_window=ALWAYS).json()
        held_id = _batch_calls(client, third["batch_id"])[0]["call_id"]

        def held() -> dict[str, Any] | None:
            details = _call(client, held_id)
            return details if details["waiting_reason"] else None

        details = wait_for(held)
        assert details["queue_status"] == "queued"
        assert details["waiting_reason"].startswith("number_daily_cap:")
        until = datetime.fromisoformat(details["scheduled_for"])
        assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24)
        assert details["scheduled_for"][:16] in details["waiting_reason"]
        # Another batch to the same callee is told about the one it waits in.
        fourth = _batch(client, [{"phone_number": callee}], calling_window=ALWAYS).json()
        assert any(
            w.startswith("call_data[0].phone_number") and third["batch_id"] in w
            for w in fourth["warnings"]
        )
    with server.db.read() as conn:
        dials = conn.execute(
            sa.select(sa.func.count())
            .select_from(call_attempts.join(calls, calls.c.id == call_attempts.c.call_id))
            .where(calls.c.to_number == callee)
        ).scalar()
    assert dials == 2


def test_a_pool_rings_from_the_nearest_number_and_never_a_paused_one(
    server_factory: Any,
) -> None:
    server = server_factory(default_cps=1000)
    key = server.new_key()
    pool = {
        "ny_212": "+12125550150",
        "ny_518": "+15185550150",
        "ca_415": "+14155550150",
        "il_312": "+13125550150",
    }
    with server.client(key) as client:
        for number in pool.values():
            added = client.post("/v1/numbers", json={"phone_number": number, "pool": "sales"})
            assert added.status_code == 200, added.text
            assert added.json()["number"]["pool"] == "sales"
        unknown = _batch(client, [{"phone_number": "+12125550101"}], **{"from": "pool:nope"})
        assert unknown.status_code == 400
        assert "pool 'nope'" in unknown.text
        callees = ["+12125550101", "+15185550102", "+13155550103", "+14155550104"]
        sent = _batch(
            client,
            [{"phone_number": n} for n in callees],
            calling_window=ALWAYS,
            **{"from": "pool:sales"},
        ).json()
        chosen = {c["to"]: c["from"] for c in _done(client, sent["batch_id"])}
        assert chosen["+12125550101"] == pool["ny_212"]  # same area code
        assert chosen["+15185550102"] == pool["ny_518"]
        assert chosen["+13155550103"] in (pool["ny_212"], pool["ny_518"])  # same state
        assert chosen["+14155550104"] == pool["ca_415"]
        with server.db.write() as conn:
            account_id = conn.execute(
                sa.select(numbers.c.account_id).where(numbers.c.phone_number == pool["ca_415"])
            ).scalar_one()
            assert pause_number(conn, account_id, pool["ca_415"], "test", datetime.now(UTC))
        shown = client.get(f"/v1/numbers/{pool['ca_415']}").json()["number"]
        assert shown["health"]["state"] == "paused"
        again = _batch(
            client,
            [{"phone_number": "+14155550105"}],
            calling_window=ALWAYS,
            **{"from": "pool:sales"},
        ).json()
        (call,) = _done(client, again["batch_id"])
        assert call["from"] in (pool["ny_212"], pool["ny_518"], pool["il_312"])
        assert client.get(f"/v1/calls/{call['call_id']}").json()["from"] == call["from"]


def test_a_caller_id_nobody_answers_is_paused_and_resumed(server_factory: Any) -> None:
    server = server_factory(
        caller_id_min_sample=10,
        caller_id_check_s=0,
        account_concurrency=2,
        default_cps=1000,
    )
    caller = "+12125550190"
    with server.client(server.new_key()) as client:
        added = client.post(
            "/v1/numbers",
            json={"phone_number": caller, "webhook": "http://127.0.0.1:9/number-events"},
        )
        assert added.status_code == 200, added.text
        assert added.json()["number"]["health"]["state"] == "healthy"
        nobody = [f"+1{area}55501{xx}" for area in ("212", "312", "415") for xx in range(70, 80)]
        sent = _batch(
            client,
            [{"phone_number": n} for n in nobody],
            calling_window=ALWAYS,
            **{"from": caller},
        ).json()

        def paused() -> dict[str, Any] | None:
            number: dict[str, Any] = client.get(f"/v1/numbers/{caller}").json()["number"]
            return number if number["health"]["state"] == "paused" else None

        number = wait_for(paused, timeout=60)
        health = number["health"]
        assert health["attempts"] >= 10
        assert health["answer_rate"] == 0.0
        assert health["window_days"] == 7
        assert "answer rate 0%" in number["paused_reason"]
        listed = client.get("/v1/numbers").json()["numbers"]
        assert [n["health"]["state"] for n in listed] == ["paused"]

        def waiting() -> list[dict[str, Any]] | None:
            calls = _batch_calls(client, sent["batch_id"])
            held = [c for c in calls if (c["waiting_reason"] or "").startswith("caller_id_paused")]
            return held or None

        held = wait_for(waiting)
        assert all(c["queue_status"] == "queued" for c in held)
        deliveries = client.get("/v1/webhooks/deliveries").json()["deliveries"]
        events = [d for d in deliveries if d["event"] == "number.paused"]
        assert len(events) == 1
        assert events[0]["url"] == "http://127.0.0.1:9/number-events"

        resumed = client.post(f"/v1/numbers/{caller}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["number"]["health"]["state"] == "healthy"
        assert resumed.json()["number"]["health"]["attempts"] == 0
        assert client.post("/v1/numbers/+12125550199/resume").status_code == 404

        # The batch goes on from the number; its figures count from the resume, so
        # ten more unanswered attempts pause it again.
        def repaused() -> dict[str, Any] | None:
            number = paused()
            return number if number and number["health"]["attempts"] >= 10 else None

        again = wait_for(repaused, timeout=60)
        assert again["paused_at"] > resumed.json()["number"]["last_used_at"]
        done = [c for c in _batch_calls(client, sent["batch_id"]) if c["completed"]]
        assert 20 <= len(done) < len(nobody)
