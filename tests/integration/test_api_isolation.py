"""Accounts are isolated: one account's key can neither see nor touch another's data."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Server

LATER = "2099-01-01 09:00:00"
QUESTIONS = {"goal": "g", "questions": [["Who answered?", "string"]]}


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def test_an_account_cannot_read_list_stop_or_analyze_anothers_work(fast: Server) -> None:
    with fast.client(fast.new_key("alice")) as alice, fast.client(fast.new_key("bob")) as bob:
        sent = alice.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "campaign_id": "alices",
                "call_data": [{"phone_number": "+12125550101"}, {"phone_number": "+12125550102"}],
                "start_time": LATER,
                "webhook": "http://127.0.0.1:9/hook",
            },
        )
        assert sent.status_code == 200, sent.text
        batch_id = sent.json()["batch_id"]
        single = alice.post(
            "/v1/calls",
            json={
                "phone_number": "+12125550103",
                "task": "Hi",
                "start_time": LATER,
                "webhook": "http://127.0.0.1:9/hook",
            },
        )
        call_id = single.json()["call_id"]
        # Settling a call writes its webhook delivery in the same transaction.
        assert alice.post(f"/v1/calls/{call_id}/stop").status_code == 200
        alice_calls = alice.get("/v1/calls").json()
        assert alice_calls["count"] == 3

        for method, path, body in [
            ("GET", f"/v1/batches/{batch_id}", None),
            ("POST", f"/v1/batches/{batch_id}/stop", None),
            ("POST", f"/v1/batches/{batch_id}/analyze", QUESTIONS),
            ("GET", f"/v1/batches/{batch_id}/analysis", None),
            ("GET", f"/v1/calls/{call_id}", None),
            ("POST", f"/v1/calls/{call_id}/stop", None),
            ("POST", f"/v1/calls/{call_id}/analyze", QUESTIONS),
            ("GET", f"/v1/calls/{call_id}/recording", None),
        ]:
            resp = bob.request(method, path, json=body)
            assert resp.status_code == 404, f"{method} {path}: {resp.status_code} {resp.text}"
            assert resp.json()["status"] == "error"
        for c in alice_calls["calls"]:
            assert bob.get(f"/v1/calls/{c['call_id']}").status_code == 404
            assert bob.post(f"/v1/calls/{c['call_id']}/stop").status_code == 404

        assert bob.get("/v1/batches").json()["batches"] == []
        assert bob.get("/v1/batches", params={"campaign_id": "alices"}).json()["batches"] == []
        for params in (
            {},
            {"batch_id": batch_id},
            {"campaign_id": "alices"},
            {"to_number": "+12125550101"},
        ):
            listed = bob.get("/v1/calls", params=params).json()
            assert (listed["count"], listed["calls"]) == (0, []), params
        assert bob.get("/v1/webhooks/deliveries").json()["deliveries"] == []
        deliveries = alice.get("/v1/webhooks/deliveries").json()["deliveries"]
        assert [d["call_id"] for d in deliveries] == [call_id]
        assert bob.get(f"/v1/webhooks/deliveries/{deliveries[0]['id']}").status_code == 404
        assert (
            bob.get("/v1/webhooks/secret").json()["secret"]
            != alice.get("/v1/webhooks/secret").json()["secret"]
        )

        # Nothing bob did reached alice's batch: it still runs with both calls queued.
        details = alice.get(f"/v1/batches/{batch_id}").json()
        assert details["batch_params"]["status"] == "running"
        assert [c["queue_status"] for c in details["call_data"]] == ["queued", "queued"]
        assert alice.get("/v1/calls").json()["count"] == 3


def test_numbers_and_dnc_lists_belong_to_one_account(fast: Server) -> None:
    with fast.client(fast.new_key("alice")) as alice, fast.client(fast.new_key("bob")) as bob:
        assert alice.post("/v1/numbers", json={"phone_number": "+12125550150"}).status_code == 200
        assert alice.post("/v1/dnc", json={"phone_number": "+12125550101"}).status_code == 200

        assert bob.get("/v1/numbers").json()["numbers"] == []
        assert bob.get("/v1/dnc").json()["entries"] == []
        assert bob.get("/v1/dnc/+12125550101").json()["on_list"] is False
        assert bob.delete("/v1/numbers/+12125550150").status_code == 404
        assert bob.delete("/v1/dnc/+12125550101").status_code == 404

        borrowed = bob.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": "+12125550102"}],
                "from": "+12125550150",
            },
        )
        assert borrowed.status_code == 400
        assert [e["field"] for e in borrowed.json()["errors"]] == ["from"]
        # Alice's do-not-call list does not block bob.
        allowed = bob.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": "+12125550101"}],
                "start_time": LATER,
            },
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["call_count"] == 1

        assert [n["phone_number"] for n in alice.get("/v1/numbers").json()["numbers"]] == [
            "+12125550150"
        ]
        assert alice.get("/v1/dnc/+12125550101").json()["on_list"] is True
