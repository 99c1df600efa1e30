"""`POST /v1/batches/{id}/calls`: appending rows as JSON or CSV, over HTTP on both databases."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from callfleet.store.tables import batches, calls
from conftest import Server, wait_for

LATER = {"start_time": "2099-01-01T09:00:00Z"}


def new_batch(client: Any, **extra: Any) -> str:
    body = {
        "base_prompt": "Hello {{name}}, about {{topic}}.",
        "call_data": [{"phone_number": "+12125550101", "name": "Ada"}],
        "request_data": {"topic": "the invoice"},
        "max_duration": 17,
        **LATER,
        **extra,
    }
    r = client.post("/v1/batches", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["batch_id"])


def rows_of(server: Server, batch_id: str) -> list[Any]:
    with server.db.read() as conn:
        return list(
            conn.execute(sa.select(calls).where(calls.c.batch_id == batch_id).order_by(calls.c.seq))
        )


def counts(server: Server, batch_id: str) -> tuple[int, int]:
    with server.db.read() as conn:
        row = conn.execute(
            sa.select(batches.c.total_calls, batches.c.remaining).where(batches.c.id == batch_id)
        ).one()
    return int(row.total_calls), int(row.remaining)


def test_append_json_uses_the_batch_settings(server: Server) -> None:
    with server.client(server.new_key()) as client:
        batch_id = new_batch(client)
        r = client.post(
            f"/v1/batches/{batch_id}/calls",
            json={
                "call_data": [
                    {"phone_number": "+12125550102", "name": "Bob"},
                    {"phone_number": "+12125550101", "name": "Ada again"},
                    {"phone_number": "+12125550103"},
                ]
            },
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["call_count"], out["total_calls"]) == (1, 2), out
        rejected = {x["index"]: x["errors"][0]["message"] for x in out["rejected"]}
        assert "already in this batch" in rejected[1]
        assert "uses name" in rejected[2]
    assert counts(server, batch_id) == (2, 2)
    rows = rows_of(server, batch_id)
    assert [(r.to_number, r.seq) for r in rows] == [("+12125550101", 0), ("+12125550102", 1)]
    assert rows[1].max_duration == 17  # the batch's stored setting
    with server.client(server.new_key()) as other:  # another account's batch is not found
        r = other.post(
            f"/v1/batches/{batch_id}/calls", json={"call_data": [{"phone_number": "+12125550104"}]}
        )
        assert r.status_code == 404, r.text
    assert counts(server, batch_id) == (2, 2)


def test_append_csv_names_lines_and_replays(server: Server) -> None:
    data = b"phone;name\n+12125550102;Bob\n\nnope;Cy\n"
    with server.client(server.new_key()) as client:
        batch_id = new_batch(client)

        def post() -> Any:
            return client.post(
                f"/v1/batches/{batch_id}/calls",
                files={"file": ("more.csv", data, "text/csv")},
                headers={"Idempotency-Key": "append-1"},
            )

        first, again = post(), post()
        assert first.status_code == again.status_code == 200, again.text
        assert again.headers.get("idempotent-replayed") == "true"
        assert first.json() == again.json()
        [bad] = first.json()["rejected"]
        assert (bad["index"], bad["line"]) == (1, 4)
        assert bad["errors"][0]["message"].endswith("(CSV line 4)")
        with_column = client.post(
            f"/v1/batches/{batch_id}/calls",
            files={"file": ("more.csv", b"cell,name\n+12125550104,Di\n", "text/csv")},
            data={"batch": json.dumps({"phone_column": "cell"})},
        )
        assert with_column.status_code == 200, with_column.text
    assert counts(server, batch_id) == (3, 3)
    assert [r.to_number for r in rows_of(server, batch_id)] == [
        "+12125550101",
        "+12125550102",
        "+12125550104",
    ]


def test_append_to_a_stopped_or_completed_batch_is_409(server_factory: Any) -> None:
    server: Server = server_factory(default_cps=1000)
    with server.client(server.new_key()) as client:
        stopped = new_batch(client)
        assert client.post(f"/v1/batches/{stopped}/stop").status_code == 200
        r = client.post(
            f"/v1/batches/{stopped}/calls", json={"call_data": [{"phone_number": "+12125550102"}]}
        )
        assert r.status_code == 409, r.text
        assert "was stopped" in r.json()["message"]
        assert "POST /v1/batches" in r.json()["message"]
        body = {
            "base_prompt": "Hi.",
            "call_data": [{"phone_number": "+12125550101"}],
            "calling_window": {"start": "00:00", "end": "24:00"},
        }
        done = client.post("/v1/batches", json=body).json()["batch_id"]
        wait_for(lambda: client.get(f"/v1/batches/{done}").json()["batch_params"]["completed_at"])
        r = client.post(
            f"/v1/batches/{done}/calls", json={"call_data": [{"phone_number": "+12125550102"}]}
        )
        assert r.status_code == 409, r.text
        assert "has completed" in r.json()["message"]
        missing = client.post("/v1/batches/nope/calls", json={"call_data": []})
        assert missing.status_code == 404
    assert counts(server, stopped)[0] == 1
    assert len(rows_of(server, done)) == 1


def test_append_bad_bodies(server: Server) -> None:
    with server.client(server.new_key()) as client:
        batch_id = new_batch(client)
        for body, field in (({}, "call_data"), ({"call_data": []}, "call_data")):
            r = client.post(f"/v1/batches/{batch_id}/calls", json=body)
            assert r.status_code == 400, r.text
            assert r.json()["errors"][0]["field"] == field
        r = client.post(
            f"/v1/batches/{batch_id}/calls", files={"file": ("x.bin", b"\x00\x01\x02", "a/b")}
        )
        assert r.status_code == 400
        assert "not a CSV" in r.json()["message"]
    assert counts(server, batch_id) == (1, 1)
