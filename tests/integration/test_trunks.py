"""Trunks through the API, and calls that go out over SIP to a real peer (SIPp)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tests.peers import Sipp

from callfleet.store.secrets import SecretBox
from callfleet.store.tables import trunks
from conftest import Server, wait_for

ALWAYS = {"start": "00:00", "end": "24:00"}


def test_trunk_crud_keeps_the_password_write_only_and_encrypted(server: Server) -> None:
    key = server.new_key()
    with server.client(key) as client:
        resp = client.post(
            "/v1/trunks",
            json={
                "name": "carrier-a",
                "host": "sip.example.net",
                "username": "acme",
                "password": "hunter2-secret",
                "cps": 2,
                "default": True,
            },
        )
        assert resp.status_code == 200, resp.text
        trunk = resp.json()["trunk"]
        assert trunk["has_password"] is True
        assert "password" not in trunk and "hunter2-secret" not in resp.text
        listed = client.get("/v1/trunks").json()["trunks"]
        assert [t["trunk_id"] for t in listed] == [trunk["trunk_id"]]
        assert "hunter2-secret" not in client.get(f"/v1/trunks/{trunk['trunk_id']}").text

        bound = client.post(
            "/v1/numbers", json={"phone_number": "+12125550100", "trunk_id": trunk["trunk_id"]}
        )
        assert bound.status_code == 200, bound.text
        assert bound.json()["number"]["trunk_id"] == trunk["trunk_id"]
        busy = client.delete(f"/v1/trunks/{trunk['trunk_id']}")
        assert busy.status_code == 409 and "+12125550100" in busy.json()["message"]

        bad = client.post(
            "/v1/trunks",
            json={"name": "x", "host": "h", "port": 70000, "transport": "sctp", "username": "u"},
        )
        assert bad.status_code == 400
        fields = {e["field"] for e in bad.json()["errors"]}
        assert fields == {"port", "transport", "password"}
        unknown = client.post(
            "/v1/numbers", json={"phone_number": "+12125550111", "trunk_id": "nope"}
        )
        assert unknown.status_code == 400

    with server.db.read() as conn:
        stored = conn.execute(sa.select(trunks.c.password_enc)).scalar_one()
    assert "hunter2" not in stored
    assert SecretBox.from_settings(server.settings).decrypt(stored) == "hunter2-secret"


def test_a_batch_goes_out_through_the_trunk_of_its_from_number(
    server_factory: Any, tmp_path: Path
) -> None:
    server: Server = server_factory(sip=True, default_cps=100)
    key = server.new_key()
    with Sipp(tmp_path, "answer_remote_bye.xml", calls=2) as sipp:
        with server.client(key) as client:
            trunk = client.post(
                "/v1/trunks", json={"name": "sipp", "host": "127.0.0.1", "port": sipp.port}
            ).json()["trunk"]
            client.post(
                "/v1/numbers", json={"phone_number": "+12125550100", "trunk_id": trunk["trunk_id"]}
            ).raise_for_status()
            resp = client.post(
                "/v1/batches",
                json={
                    "base_prompt": "Hi",
                    "from": "+12125550100",
                    "call_data": [
                        {"phone_number": "+14155550123"},
                        {"phone_number": "+14155550124"},
                    ],
                    "calling_window": ALWAYS,
                },
            )
            assert resp.status_code == 200, resp.text
            batch_id = resp.json()["batch_id"]

            def done() -> dict[str, Any] | None:
                d: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
                return d if d["analysis"]["completed_calls"] == 2 else None

            details = wait_for(done, timeout=30)
        rc = sipp.wait(15)
    assert rc == 0, f"SIPp saw a wrong dialog (exit {rc}):\n{sipp.log()}"
    for call in details["call_data"]:
        assert call["status"] == "completed", call
        assert call["call_length"] > 0
    with server.client(key) as client:
        one = client.get(f"/v1/calls/{details['call_data'][0]['call_id']}").json()
    assert one["endpoint_url"].startswith("sip:")
    assert one["call_ended_by"] == "USER"
