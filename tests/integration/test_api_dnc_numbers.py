"""Do-not-call lists (at submission and again at dial time) and the account's own numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from callfleet.store.tables import call_attempts, calls
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def send_batch(client: httpx.Client, numbers: list[str], **fields: Any) -> httpx.Response:
    body = {
        "base_prompt": "Hi",
        "call_data": [{"phone_number": n} for n in numbers],
        "calling_window": OPEN,
        **fields,
    }
    return client.post("/v1/batches", json=body)


def test_numbers_on_the_dnc_list_are_rejected_at_submission(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        added = client.post(
            "/v1/dnc", json={"phone_numbers": ["212-555-0101", "+12125550102"], "reason": "asked"}
        )
        assert added.status_code == 200, added.text
        assert (added.json()["added"], added.json()["phone_numbers"]) == (
            2,
            ["+12125550101", "+12125550102"],
        )
        again = client.post("/v1/dnc", json={"phone_number": "(212) 555-0101"}).json()
        assert again["added"] == 0

        listed = client.get("/v1/dnc").json()["entries"]
        assert sorted(e["phone_number"] for e in listed) == ["+12125550101", "+12125550102"]
        assert {e["reason"] for e in listed} == {"asked"}
        check = client.get("/v1/dnc/2125550101").json()
        assert (check["phone_number"], check["on_list"]) == ("+12125550101", True)
        assert client.get("/v1/dnc/+12125550103").json()["on_list"] is False

        resp = send_batch(client, ["+12125550101", "+12125550102", "+12125550103"])
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["call_count"] == 1
        assert [r["index"] for r in sent["rejected"]] == [0, 1]
        for row in sent["rejected"]:
            [err] = row["errors"]
            assert err["field"] == f"call_data[{row['index']}].phone_number"
            assert "do-not-call" in err["message"]

        only_blocked = send_batch(client, ["+12125550101"])
        assert only_blocked.status_code == 400
        assert [e["field"] for e in only_blocked.json()["errors"]] == ["call_data[0].phone_number"]
        single = client.post("/v1/calls", json={"phone_number": "+12125550102", "task": "Hi"})
        assert single.status_code == 400
        assert "do-not-call" in single.json()["message"]

        removed = client.delete("/v1/dnc/+12125550101")
        assert removed.status_code == 200, removed.text
        assert client.delete("/v1/dnc/+12125550101").status_code == 404
        assert send_batch(client, ["+12125550101"]).json()["call_count"] == 1

        bad = client.post("/v1/dnc", json={"phone_numbers": ["+12125550104", "12"]})
        assert bad.status_code == 400
        assert [e["field"] for e in bad.json()["errors"]] == ["phone_numbers[1]"]
        assert client.get("/v1/dnc/+12125550104").json()["on_list"] is False


def test_a_number_added_to_dnc_after_submission_is_not_dialled(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        resp = send_batch(
            client, ["+12125550101", "+12125550102"], start_time="2099-01-01 09:00:00"
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]
        assert resp.json()["schedule"]["waiting_for_window_or_start_time"] == 2

        assert client.post("/v1/dnc", json={"phone_number": "+12125550101"}).status_code == 200
        # The start time "arrives": move both calls to now, as the hopper would see it.
        with fast.db.write() as conn:
            conn.execute(
                sa.update(calls)
                .where(calls.c.batch_id == batch_id)
                .values(not_before=datetime.now(UTC))
            )

        def finished() -> dict[str, Any] | None:
            details: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
            return details if details["analysis"]["completed_calls"] == 2 else None

        details = wait_for(finished)
    by_to = {c["to"]: c for c in details["call_data"]}
    blocked, other = by_to["+12125550101"], by_to["+12125550102"]
    assert blocked["status"] == "canceled"
    assert "do-not-call" in blocked["error_message"]
    assert blocked["call_length"] == 0.0
    assert blocked["transcripts"] == []
    assert other["status"] == "completed"
    with fast.db.read() as conn:
        outcomes = dict(
            conn.execute(
                sa.select(calls.c.to_number, call_attempts.c.status).join(
                    call_attempts, call_attempts.c.call_id == calls.c.id
                )
            ).all()
        )
    # The blocked number never rang: its only attempt was settled as cancelled.
    assert outcomes == {"+12125550101": "canceled", "+12125550102": "completed"}


def test_the_accounts_numbers_and_from(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        added = client.post("/v1/numbers", json={"phone_number": "(212) 555-0150", "label": "main"})
        assert added.status_code == 200, added.text
        number = added.json()["number"]
        assert (number["phone_number"], number["label"]) == ("+12125550150", "main")
        listed = client.get("/v1/numbers").json()["numbers"]
        assert [n["phone_number"] for n in listed] == ["+12125550150"]

        duplicate = client.post("/v1/numbers", json={"phone_number": "+12125550150"})
        assert duplicate.status_code == 409
        assert "+12125550150" in duplicate.json()["message"]
        bad = client.post("/v1/numbers", json={"phone_number": "555"})
        assert bad.status_code == 400
        assert [e["field"] for e in bad.json()["errors"]] == ["phone_number"]
        long_label = client.post(
            "/v1/numbers", json={"phone_number": "+12125550151", "label": "x" * 201}
        )
        assert long_label.status_code == 400
        assert [e["field"] for e in long_label.json()["errors"]] == ["label"]

        resp = send_batch(client, ["+12125550101", "+12125550102"], **{"from": "212 555 0150"})
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]
        single = client.post(
            "/v1/calls",
            json={
                "phone_number": "+12125550103",
                "task": "Hi",
                "from": "+12125550150",
                "calling_window": OPEN,
            },
        )
        assert single.status_code == 200, single.text

        def all_done() -> bool:
            return bool(client.get("/v1/calls", params={"completed": "true"}).json()["count"] == 3)

        wait_for(all_done)
        details = client.get(f"/v1/batches/{batch_id}").json()
        assert {c["from"] for c in details["call_data"]} == {"+12125550150"}
        assert client.get(f"/v1/calls/{single.json()['call_id']}").json()["from"] == "+12125550150"
        from_ours = client.get("/v1/calls", params={"from_number": "+12125550150"}).json()
        assert from_ours["count"] == 3

        assert client.delete("/v1/numbers/+12125550150").status_code == 200
        assert client.delete("/v1/numbers/+12125550150").status_code == 404
        assert client.get("/v1/numbers").json()["numbers"] == []
        gone = send_batch(client, ["+12125550104"], **{"from": "+12125550150"})
        assert gone.status_code == 400
        assert [e["field"] for e in gone.json()["errors"]] == ["from"]
