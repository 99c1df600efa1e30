"""The batch family over HTTP: send, list, details, test_mode, templating, windows, stop."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from callfleet.store.batches import expand_stored_call
from callfleet.store.tables import batches, call_attempts, calls
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def dialled_task(conn: Any, row: Any) -> str:
    """The call's task as the dialler builds it (a batch's prompt is stored once)."""
    return expand_stored_call(conn, row.batch_id, row.task, row.params, row.request_data)[0]


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() is not None, f"{text} has no UTC offset"
    return value


def batch_done(client: Any, batch_id: str, total: int) -> Any:
    # Wait for the batch row too: on PostgreSQL one response's statements may see different
    # commits (reads are READ COMMITTED), and the batch row is read before the calls.
    def check() -> dict[str, Any] | None:
        details: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
        done = details["batch_params"]["completed_at"] is not None
        return details if done and details["analysis"]["completed_calls"] == total else None

    return wait_for(check)


def test_send_list_and_read_a_batch(fast: Server) -> None:
    body = {
        "base_prompt": "Remind {{name}} of the appointment.",
        "call_data": [
            {"phone_number": "+12125550101", "name": "Ada"},
            {"phone_number": "+12125550161", "name": "Bob"},
        ],
        "label": "reminders",
        "campaign_id": "spring",
        "max_duration": 12,
        "wait_for_greeting": True,
        "language": "es",
        "calling_window": OPEN,
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["status"] == "success"
        assert sent["message"] == "success"
        assert sent["call_count"] == 2
        assert (sent["rejected"], sent["warnings"]) == ([], [])
        batch_id = sent["batch_id"]

        [listed] = client.get("/v1/batches").json()["batches"]
        assert listed["batch_id"] == batch_id
        assert (listed["campaign_id"], listed["label"]) == ("spring", "reminders")
        assert listed["base_prompt"] == "Remind {{name}} of the appointment."
        assert listed["endpoint_code"] == "api"
        params = listed["call_params"]
        assert (params["max_duration"], params["wait_for_greeting"], params["language"]) == (
            12,
            True,
            "es",
        )
        assert (params["reduce_latency"], params["voice_id"]) == (False, 0)
        created = parse_time(listed["created_at"])
        assert abs((datetime.now(UTC) - created).total_seconds()) < 60

        details = batch_done(client, batch_id, 2)
        batch_params = details["batch_params"]
        assert batch_params["id"] == batch_id
        assert (batch_params["label"], batch_params["campaign_id"]) == ("reminders", "spring")
        assert batch_params["base_prompt"] == body["base_prompt"]
        assert batch_params["call_params"] == params
        analysis = details["analysis"]
        assert (analysis["total_calls"], analysis["completed_calls"]) == (2, 2)
        assert analysis["in_progress_calls"] == 0
        assert analysis["queue_statuses"] == {"complete": 2}
        assert sorted(analysis["call_ids"]) == sorted(c["call_id"] for c in details["call_data"])
        assert analysis["error_messages"] == ["SIP 486 Busy Here"]
        assert set(analysis["call_lengths"]["summary"]) == {
            "0-5",
            "5-10",
            "10-15",
            "15-20",
            "20-30",
            "30-45",
            "45-60",
            "60-90",
            "90-120",
            "120+",
        }
        assert sum(analysis["call_lengths"]["summary"].values()) == 2
        by_to = {c["to"]: c for c in details["call_data"]}
        assert (by_to["+12125550101"]["status"], by_to["+12125550161"]["status"]) == (
            "completed",
            "busy",
        )
        for call in details["call_data"]:
            assert call["completed"] is True
            assert call["from"] == ""
            assert call["batch_id"] == batch_id
            assert isinstance(call["call_length"], float)
            assert isinstance(call["transcripts"], list)
        assert by_to["+12125550161"]["error_message"] == "SIP 486 Busy Here"

        no_calls = client.get(f"/v1/batches/{batch_id}", params={"include_calls": "false"})
        assert no_calls.json()["call_data"] == []
        paged = client.get(
            f"/v1/batches/{batch_id}", params={"calls_offset": 1, "calls_limit": 1}
        ).json()
        assert [c["call_id"] for c in paged["call_data"]] == [details["call_data"][1]["call_id"]]
        assert paged["calls_total"] == 2


def test_list_batches_filters_and_ranges(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        ids = []
        for i, campaign in enumerate(["a", "b", "a"]):
            resp = client.post(
                "/v1/batches",
                json={
                    "base_prompt": "Hi",
                    "campaign_id": campaign,
                    "label": f"batch {i}",
                    "call_data": [{"phone_number": f"+1212555011{i}"}],
                    "start_time": "2099-01-01 09:00:00",
                },
            )
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["batch_id"])

        newest_first = [b["batch_id"] for b in client.get("/v1/batches").json()["batches"]]
        assert newest_first == ids[::-1]
        oldest_first = client.get("/v1/batches", params={"ascending": "true"}).json()["batches"]
        assert [b["batch_id"] for b in oldest_first] == ids
        in_a = client.get("/v1/batches", params={"campaign_id": "a"}).json()["batches"]
        assert sorted(b["batch_id"] for b in in_a) == sorted([ids[0], ids[2]])
        window = client.get("/v1/batches", params={"ascending": "true", "from": 1, "to": 2})
        assert [b["batch_id"] for b in window.json()["batches"]] == [ids[1]]
        assert len(client.get("/v1/batches", params={"limit": 2}).json()["batches"]) == 2
        in_campaign = client.get("/v1/calls", params={"campaign_id": "a"}).json()
        assert in_campaign["count"] == 2


def test_unknown_fields_and_the_sdks_extras_are_ignored_with_warnings(fast: Server) -> None:
    body = {
        "base_prompt": "The real prompt for {{name}}",
        "call_data": [{"phone_number": "+12125550101", "name": "Ada"}],
        "task": "an ignored task",
        "phone_number": "+12125550199",
        "temperature": None,
        "tools": None,
        "interruption_threshold": None,
        "favourite_colour": "blue",
        "test_mode": True,
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
    assert sent["warnings"] == [
        "`task` is ignored in a batch: `base_prompt` is the task of every call.",
        "A top-level `phone_number` is ignored in a batch: each call_data row has its own.",
        "Unknown field `favourite_colour` was ignored.",
    ]
    assert sent["test"]["warnings"] == sent["warnings"]
    assert sent["test"]["rendered_prompt"] == "The real prompt for Ada"
    assert sent["test"]["to"] == "+12125550101"
    assert sent["call_count"] == 1


def test_legacy_aliases_are_accepted(fast: Server) -> None:
    body = {
        "base_prompt": "Hi",
        "call_data": [{"phone_number": "+12125550101"}],
        "voice_id": 7,
        "reduce_latency": True,
        "amd": True,
        "voice_preset_id": "preset-1",
        "voice_settings": {"stability": 0.5},
        "test_mode": True,
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["warnings"] == []
        assert sent["test"]["parameters"]["voice"] == "7"
        [listed] = client.get("/v1/batches").json()["batches"]
    params = listed["call_params"]
    assert (params["voice_id"], params["reduce_latency"], params["amd"]) == (7, True, True)
    assert params["voice_preset_id"] == "preset-1"


def test_test_mode_dispatches_only_the_first_valid_call(fast: Server) -> None:
    rows = [
        {"phone_number": "1234567890", "business": "Nowhere"},
        {"phone_number": "(212) 555-0101", "business": "Acme"},
        {"phone_number": "+12125550102", "business": "Bolt"},
        {"phone_number": "+12125550103"},
    ]
    body = {
        "base_prompt": "Call {{business}} for {service}.",
        "first_sentence": "Hello {{business}}!",
        "request_data": {"service": "the renewal"},
        "call_data": rows,
        "test_mode": True,
        "max_duration": 3,
        "calling_window": OPEN,
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["call_count"] == 1
        test = sent["test"]
        assert test["dispatched_row"] == 1
        assert test["to"] == "+12125550101"
        assert test["rendered_prompt"] == "Call Acme for the renewal."
        params = test["parameters"]
        assert params["first_sentence"] == "Hello Acme!"
        assert (params["max_duration"], params["record"], params["voicemail_action"]) == (
            3.0,
            False,
            "hangup",
        )
        validation = test["validation"]
        assert (validation["rows"], validation["valid"]) == (4, 2)
        assert [r["index"] for r in validation["rejected"]] == [0, 3]
        report = validation["report"]
        assert [(r["index"], r["valid"]) for r in report] == [
            (0, False),
            (1, True),
            (2, True),
            (3, False),
        ]
        assert [r["phone_number"] for r in report] == [
            "1234567890",
            "+12125550101",
            "+12125550102",
            "+12125550103",
        ]
        assert report[0]["errors"][0]["field"] == "call_data[0].phone_number"
        assert "business" in report[3]["errors"][0]["message"]
        assert report[1]["errors"] == report[2]["errors"] == []

        details = batch_done(client, sent["batch_id"], 1)
        assert [c["to"] for c in details["call_data"]] == ["+12125550101"]
        assert details["analysis"]["total_calls"] == 1
        assert details["batch_params"]["status"] == "completed"
        assert client.get("/v1/calls").json()["count"] == 1


def test_templating_fills_both_spellings_and_keeps_row_properties(fast: Server) -> None:
    body = {
        "base_prompt": "Hello {{business}}, about {service} on {{ date }} (order {{order id}}) "
        "for {company}.",
        "request_data": {"company": "Acme Ltd"},
        "call_data": [
            {
                "phone_number": "212-555-0101",
                "business": "Lakeside Dental",
                "service": "Cloud Backup",
                "date": "January 9th",
                "order id": 77,
                "vip": True,
                "notes": {"floor": 2},
            },
            {
                "phone_number": "+12125550102",
                "business": "Harbor Books",
                "service": "Payroll",
                "date": "March 1st",
                "order id": "A-1",
            },
        ],
        "start_time": "2099-01-01 09:00:00 -05:00",
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["call_count"] == 2
        details = client.get(f"/v1/batches/{resp.json()['batch_id']}").json()
        first = client.get(f"/v1/calls/{details['call_data'][0]['call_id']}").json()

    with fast.db.read() as conn:
        tasks = [
            dialled_task(conn, r) for r in conn.execute(sa.select(calls).order_by(calls.c.seq))
        ]
    assert tasks == [
        "Hello Lakeside Dental, about Cloud Backup on January 9th (order 77) for Acme Ltd.",
        "Hello Harbor Books, about Payroll on March 1st (order A-1) for Acme Ltd.",
    ]
    assert first["request_data"] == {
        "company": "Acme Ltd",
        "phone_number": "+12125550101",
        "business": "Lakeside Dental",
        "service": "Cloud Backup",
        "date": "January 9th",
        "order id": "77",
        "vip": "true",
        "notes": '{"floor":2}',
    }
    variables = first["variables"]
    assert {k: variables[k] for k in first["request_data"]} == first["request_data"]
    assert (variables["call_id"], variables["to"]) == (first["call_id"], "+12125550101")
    assert all(isinstance(v, str) for v in variables.values())


def test_a_call_whose_window_is_closed_waits_while_others_go(fast: Server) -> None:
    before = datetime.now(UTC)
    opening_day = before.date() + timedelta(days=2)
    closed_now = {
        "start": "00:00",
        "end": "24:00",
        "days": [DAYS[opening_day.weekday()]],
        "timezone": "UTC",
    }
    body = {
        "base_prompt": "Hi",
        "calling_window": OPEN,
        "call_data": [
            {"phone_number": "+12125550101", "calling_window": closed_now},
            {"phone_number": "+12125550102"},
        ],
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        expected = datetime.combine(opening_day, time(0), UTC)
        assert sent["schedule"] == {
            "dial_now": 1,
            "waiting_for_window_or_start_time": 1,
            "next_dial_at": expected.isoformat(),
        }
        batch_id = sent["batch_id"]

        def other_done() -> dict[str, Any] | None:
            got = client.get("/v1/calls", params={"to_number": "+12125550102"}).json()
            return got if got["calls"] and got["calls"][0]["completed"] else None

        wait_for(other_done)
        details = client.get(f"/v1/batches/{batch_id}").json()
        waiting = next(c for c in details["call_data"] if c["to"] == "+12125550101")
        assert (waiting["completed"], waiting["queue_status"], waiting["status"]) == (
            False,
            "queued",
            None,
        )
        assert parse_time(waiting["scheduled_for"]) == expected
        assert details["analysis"]["queued_calls"] == 1
        assert details["batch_params"]["completed_at"] is None
    with fast.db.read() as conn:
        dialled = conn.execute(
            sa.select(sa.func.count())
            .select_from(call_attempts)
            .where(call_attempts.c.call_id == waiting["call_id"])
        ).scalar()
    assert dialled == 0


def test_a_start_time_in_the_future_is_reported_in_the_schedule(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": "+12125550101"}],
                "calling_window": OPEN,
                "start_time": "2099-03-04 05:06:07 -05:00",
            },
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["schedule"] == {
            "dial_now": 0,
            "waiting_for_window_or_start_time": 1,
            "next_dial_at": "2099-03-04T10:06:07+00:00",
        }
        past = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": "+12125550102"}],
                "calling_window": OPEN,
                "start_time": "2001-01-01 00:00:00",
            },
        )
        assert past.json()["schedule"]["dial_now"] == 1


def test_stop_a_batch_cancels_what_was_not_dialled(server_factory: Any) -> None:
    srv: Server = server_factory(simulator_time_scale=0.05, account_concurrency=2)
    # 00-39: a person answers after one to three rings and talks 20-60 s; these talk 50 s
    # or more (2.5 s at this scale), so no call can end between seeing it dial and the stop.
    numbers = [f"+121255501{xx:02d}" for xx in (5, 10, 11, 16, 17, 22, 28, 33, 34, 39)]
    with srv.client(srv.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": n} for n in numbers],
                "calling_window": OPEN,
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]

        def dialling() -> bool:
            rows = client.get(f"/v1/batches/{batch_id}").json()["call_data"]
            return any(c["queue_status"] == "started" for c in rows)

        wait_for(dialling)
        stop = client.post(f"/v1/batches/{batch_id}/stop")
        assert stop.status_code == 200, stop.text
        stopped = stop.json()
        assert (stopped["status"], stopped["batch_id"]) == ("success", batch_id)
        assert stopped["num_calls"] >= 8, stopped
        assert 1 <= stopped["live_calls_ending"] <= 2, stopped

        details = batch_done(client, batch_id, 10)
        cancelled = [
            c
            for c in details["call_data"]
            if c["error_message"] == "Cancelled: the batch was stopped."
        ]
        assert len(cancelled) == stopped["num_calls"]
        for call in cancelled:
            assert (call["status"], call["queue_status"], call["call_length"]) == (
                "canceled",
                "complete",
                0.0,
            )
        dialled = [c for c in details["call_data"] if c not in cancelled]
        assert len(dialled) == 10 - stopped["num_calls"]
        assert len(dialled) >= stopped["live_calls_ending"]
        for call in dialled:
            assert call["status"] in ("completed", "canceled"), call
        for call in details["call_data"]:
            assert call["completed"] is True
        assert details["analysis"]["in_progress_calls"] == 0
        assert details["batch_params"]["status"] == "stopped"
        assert details["batch_params"]["completed_at"] is not None

        again = client.post(f"/v1/batches/{batch_id}/stop").json()
        assert (again["num_calls"], again["live_calls_ending"]) == (0, 0)

    with srv.db.read() as conn:
        stopped_at = conn.execute(
            sa.select(batches.c.stopped_at).where(batches.c.id == batch_id)
        ).scalar_one()
        starts = [
            r[0]
            for r in conn.execute(
                sa.select(call_attempts.c.started_at)
                .join(calls, calls.c.id == call_attempts.c.call_id)
                .where(calls.c.batch_id == batch_id)
            )
        ]
    assert len(starts) == len(dialled)
    assert all(start <= stopped_at for start in starts), "a call was dialled after the stop"


def test_placeholders_filled_during_the_call_are_left_for_the_agent(fast: Server) -> None:
    body = {
        "base_prompt": "Call {{business}}; the lead is {{lead_status}}, plan {{plan}}.",
        "dynamic_data": [
            {
                "url": "https://crm.example.com/leads/{{phone_number}}",
                "response_data": [{"name": "lead_status", "data": "$.lead.status"}],
            }
        ],
        "call_data": [{"phone_number": "+12125550101", "business": "Acme", "plan": "gold"}],
        "start_time": "2099-01-01 09:00:00 -05:00",
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text
        call_id = client.get(f"/v1/batches/{resp.json()['batch_id']}").json()["call_data"][0][
            "call_id"
        ]
        details = client.get(f"/v1/calls/{call_id}").json()
        # Without the dynamic data, the same placeholder is a missing property.
        body.pop("dynamic_data")
        refused = client.post("/v1/batches", json=body)
    assert "lead_status" not in details["request_data"]
    with fast.db.read() as conn:
        task = dialled_task(conn, conn.execute(sa.select(calls).where(calls.c.id == call_id)).one())
    assert task == "Call Acme; the lead is {{lead_status}}, plan gold."
    assert refused.status_code == 400 and "lead_status" in refused.text
