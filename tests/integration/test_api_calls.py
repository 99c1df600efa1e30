"""Single calls over HTTP: send, read, list with filters, stop (queued and live)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
LATER = "2099-01-01 09:00:00"


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def ended(client: httpx.Client, call_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        details: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
        return details if details["completed"] else None

    result: dict[str, Any] = wait_for(check)
    return result


def send_call(client: httpx.Client, **fields: Any) -> str:
    body = {"task": "Hi", "calling_window": OPEN, **fields}
    resp = client.post("/v1/calls", json=body)
    assert resp.status_code == 200, resp.text
    call_id: str = resp.json()["call_id"]
    return call_id


def test_send_a_call_and_read_it_back(fast: Server) -> None:
    body = {
        "phone_number": "(212) 555-0101",
        "task": "Remind {{name}} about {thing}.",
        "request_data": {"name": "Ada", "thing": "the dentist"},
        "metadata": {"crm_id": 42},
        "max_duration": 5,
        "answered_by_enabled": True,
        "calling_window": OPEN,
        "crm_note": "kept",
    }
    with fast.client(fast.new_key()) as client:
        resp = client.post("/v1/calls", json=body)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert (sent["status"], sent["message"], sent["batch_id"]) == (
            "success",
            "Call successfully queued.",
            None,
        )
        assert sent["warnings"] == [
            "`crm_note` is not a Send Call field; it was kept in request_data."
        ]
        call_id = sent["call_id"]

        details = ended(client, call_id)
        assert (details["call_id"], details["c_id"]) == (call_id, call_id)
        assert (details["to"], details["from"], details["batch_id"]) == ("+12125550101", "", "")
        assert details["request_data"] == {
            "name": "Ada",
            "thing": "the dentist",
            "phone_number": "+12125550101",
            "crm_note": "kept",
        }
        assert details["metadata"] == {"crm_id": 42}
        assert details["max_duration"] == 5.0
        assert (details["status"], details["queue_status"], details["answered_by"]) == (
            "completed",
            "complete",
            "human",
        )
        assert details["error_message"] == ""
        assert details["call_ended_by"] in ("USER", "ASSISTANT")
        assert "simulator" in details["endpoint_url"]
        created, started, end = (
            datetime.fromisoformat(details[k]) for k in ("created_at", "started_at", "end_at")
        )
        assert created <= started <= end
        assert isinstance(details["call_length"], float) and details["call_length"] >= 0
        assert details["transcripts"], details
        assert all(t["c_id"] == call_id for t in details["transcripts"])
        assert details["concatenated_transcript"] == "\n".join(
            f"{t['user']}: {t['text']}" for t in details["transcripts"]
        )
        assert (details["record"], details["recording_url"]) == (False, None)

        recording = client.get(f"/v1/calls/{call_id}/recording")
        assert recording.status_code == 404
        assert "record" in recording.json()["message"]


def test_a_single_calls_bad_input_is_rejected_with_the_field(fast: Server) -> None:
    cases: list[tuple[dict[str, Any], list[str], str]] = [
        ({"phone_number": "+12125550101"}, ["task"], "task"),
        ({"task": "Hi"}, ["phone_number"], "phone_number"),
        ({}, ["phone_number", "task"], "phone_number"),
        ({"phone_number": "1234567890", "task": "Hi"}, ["phone_number"], "area code 123"),
        (
            {"phone_number": "+12125550101", "task": "Hi", "from": "+12125550150"},
            ["from"],
            "+12125550150",
        ),
        ({"phone_number": "+12125550101", "task": "Hi", "record": "yes"}, ["record"], "record"),
        ({"phone_number": "+12125550101", "task": "Hi {{name}}"}, ["task"], "name"),
    ]
    with fast.client(fast.new_key()) as client:
        for body, fields, mention in cases:
            resp = client.post("/v1/calls", json=body)
            assert resp.status_code == 400, (body, resp.text)
            answer = resp.json()
            assert answer["status"] == "error"
            assert [e["field"] for e in answer["errors"]] == fields, (body, answer)
            assert mention in answer["message"] + " ".join(e["message"] for e in answer["errors"])
        assert client.get("/v1/calls").json()["count"] == 0


def test_list_calls_with_filters(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "answered_by_enabled": True,
                "calling_window": OPEN,
                "call_data": [
                    {"phone_number": "+12125550101"},
                    {"phone_number": "+12125550161"},
                    {"phone_number": "+12125550172"},
                ],
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]
        voicemail = send_call(client, phone_number="+12125550145", answered_by_enabled=True)
        waiting = send_call(client, phone_number="+12125550102", start_time=LATER)

        def four_done() -> bool:
            listed = client.get("/v1/calls", params={"completed": "true"}).json()
            return bool(listed["count"] == 4)

        wait_for(four_done)

        everything = client.get("/v1/calls", params={"ascending": "true"}).json()
        assert everything["count"] == 5
        assert everything["calls"][-1]["call_id"] == waiting
        for call in everything["calls"]:
            assert {
                "call_id",
                "createdAt",
                "call_length",
                "to",
                "from",
                "completed",
                "queue_status",
                "error_message",
                "answered_by",
                "batch_id",
            } <= set(call)
        stamps = [datetime.fromisoformat(c["createdAt"]) for c in everything["calls"]]
        assert stamps == sorted(stamps)

        in_batch = client.get("/v1/calls", params={"batch_id": batch_id}).json()
        assert in_batch["count"] == 3
        assert {c["batch_id"] for c in in_batch["calls"]} == {batch_id}

        busy = client.get("/v1/calls", params={"to_number": "+12125550161"}).json()
        assert [(c["to"], c["status"]) for c in busy["calls"]] == [("+12125550161", "busy")]

        done = client.get("/v1/calls", params={"completed": "true"}).json()
        assert done["count"] == 4 and all(c["completed"] for c in done["calls"])
        pending = client.get("/v1/calls", params={"completed": "false"}).json()
        assert [c["call_id"] for c in pending["calls"]] == [waiting]

        by_voicemail = client.get("/v1/calls", params={"answered_by": "voicemail"}).json()
        assert [c["call_id"] for c in by_voicemail["calls"]] == [voicemail]

        page = client.get("/v1/calls", params={"ascending": "true", "from": 1, "to": 3}).json()
        assert page["count"] == 5
        assert [c["call_id"] for c in page["calls"]] == [
            c["call_id"] for c in everything["calls"][1:3]
        ]
        newest = client.get("/v1/calls", params={"limit": 2}).json()["calls"]
        assert [c["call_id"] for c in newest] == [
            c["call_id"] for c in everything["calls"][::-1][:2]
        ]

        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert client.get("/v1/calls", params={"start_date": future}).json()["count"] == 0
        past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        assert client.get("/v1/calls", params={"end_date": past}).json()["count"] == 0
        assert client.get("/v1/calls", params={"start_date": past}).json()["count"] == 5


def test_stop_a_queued_call(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        call_id = send_call(client, phone_number="+12125550101", start_time=LATER)
        stop = client.post(f"/v1/calls/{call_id}/stop")
        assert stop.status_code == 200, stop.text
        assert stop.json() == {"status": "success", "message": "Call ended successfully."}
        details = client.get(f"/v1/calls/{call_id}").json()
        assert (details["completed"], details["status"], details["queue_status"]) == (
            True,
            "canceled",
            "complete",
        )
        assert details["error_message"] == "Cancelled: the call was stopped."
        assert details["started_at"] is None

        again = client.post(f"/v1/calls/{call_id}/stop")
        assert again.status_code == 400
        assert "already ended" in again.json()["message"]


def test_stop_a_live_call(server_factory: Any) -> None:
    # +1 212 555 0117: three rings (1.8 s at this scale), then 59 s of talk (5.9 s).
    srv: Server = server_factory(simulator_time_scale=0.1)
    with srv.client(srv.new_key()) as client:
        call_id = send_call(client, phone_number="+12125550117")
        wait_for(lambda: client.get(f"/v1/calls/{call_id}").json()["answered_at"])
        stop = client.post(f"/v1/calls/{call_id}/stop")
        assert stop.status_code == 200, stop.text
        assert stop.json()["message"] == "Call ended successfully."
        details = ended(client, call_id)
    assert details["status"] == "completed"
    assert details["call_ended_by"] == "ASSISTANT"
    assert details["call_length"] * 60 < 4.0, "the call ran on after it was stopped"
