"""`Idempotency-Key`: a retried request creates nothing new and never dials anyone twice."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from callfleet.store.accounts import account_by_key
from callfleet.store.tables import call_attempts, idempotency_keys
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
BATCH = {
    "base_prompt": "Hi {{name}}",
    "call_data": [
        {"phone_number": "+12125550101", "name": "Ada"},
        {"phone_number": "+12125550102", "name": "Bob"},
    ],
    "calling_window": OPEN,
}


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def post(client: httpx.Client, path: str, raw: bytes, key: str) -> httpx.Response:
    return client.post(
        path, content=raw, headers={"content-type": "application/json", "idempotency-key": key}
    )


def counts(client: httpx.Client) -> tuple[int, int]:
    batches = len(client.get("/v1/batches").json()["batches"])
    return batches, client.get("/v1/calls").json()["count"]


def test_a_repeated_batch_returns_the_first_response_and_creates_nothing(fast: Server) -> None:
    raw = json.dumps(BATCH).encode()
    with fast.client(fast.new_key()) as client:
        first = post(client, "/v1/batches", raw, "order-42")
        assert first.status_code == 200, first.text
        assert "idempotent-replayed" not in first.headers
        batch_id = first.json()["batch_id"]
        assert counts(client) == (1, 2)

        for _ in range(2):
            again = post(client, "/v1/batches", raw, "order-42")
            assert again.status_code == 200, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == first.json()
        assert counts(client) == (1, 2)

        wait_for(lambda: client.get("/v1/calls", params={"completed": "true"}).json()["count"] == 2)
        late = post(client, "/v1/batches", raw, "order-42")
        assert late.json()["batch_id"] == batch_id
        assert counts(client) == (1, 2)

        # A new key is a new request.
        other = post(client, "/v1/batches", raw, "order-43")
        assert other.status_code == 200
        assert other.json()["batch_id"] != batch_id
        assert counts(client) == (2, 4)
        wait_for(lambda: client.get("/v1/calls", params={"completed": "true"}).json()["count"] == 4)
    with fast.db.read() as conn:
        dials = conn.execute(sa.select(sa.func.count()).select_from(call_attempts)).scalar()
    assert dials == 4


def test_the_same_key_with_a_different_body_is_422(fast: Server) -> None:
    raw = json.dumps(BATCH).encode()
    changed = json.dumps({**BATCH, "label": "changed"}).encode()
    with fast.client(fast.new_key()) as client:
        assert post(client, "/v1/batches", raw, "k1").status_code == 200
        resp = post(client, "/v1/batches", changed, "k1")
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["status"] == "error"
        assert "different request" in body["message"]
        # The same key on another endpoint is a different request too.
        call = json.dumps({"phone_number": "+12125550103", "task": "Hi"}).encode()
        assert post(client, "/v1/calls", call, "k1").status_code == 422
        assert counts(client) == (1, 2)


def test_a_single_call_is_idempotent_too(fast: Server) -> None:
    raw = json.dumps(
        {"phone_number": "+12125550103", "task": "Hi", "calling_window": OPEN}
    ).encode()
    with fast.client(fast.new_key()) as client:
        first = post(client, "/v1/calls", raw, "call-1")
        second = post(client, "/v1/calls", raw, "call-1")
        assert first.status_code == second.status_code == 200
        assert second.json()["call_id"] == first.json()["call_id"]
        assert second.json()["batch_id"] is None
        assert client.get("/v1/calls").json()["count"] == 1


def test_a_rejected_request_is_replayed_as_rejected(server_factory: Any) -> None:
    # Replaying rejections is the operator's opt-in (by default a rejection stores nothing).
    fast: Server = server_factory(default_cps=1000, idempotency_replay_rejected=True)
    raw = json.dumps({"base_prompt": "Hi", "call_data": [{"phone_number": "1234567890"}]}).encode()
    with fast.client(fast.new_key()) as client:
        first = post(client, "/v1/batches", raw, "bad-1")
        second = post(client, "/v1/batches", raw, "bad-1")
        assert first.status_code == second.status_code == 400
        assert second.json() == first.json()
        assert second.headers["idempotent-replayed"] == "true"
        assert counts(client) == (0, 0)


def test_a_request_still_in_flight_is_409(fast: Server) -> None:
    raw = json.dumps(BATCH).encode()
    key = fast.new_key()
    with fast.db.write() as conn:
        account = account_by_key(conn, key)
        assert account is not None
        now = datetime.now(UTC)
        for name, until in (
            ("busy", now + timedelta(minutes=5)),
            ("abandoned", now - timedelta(seconds=1)),
        ):
            conn.execute(
                sa.insert(idempotency_keys).values(
                    account_id=account.id,
                    key=name,
                    method_path="POST /v1/batches",
                    request_hash=hashlib.sha256(raw).hexdigest(),
                    state="in_flight",
                    created_at=now,
                    locked_until=until,
                )
            )
    with fast.client(key) as client:
        busy = post(client, "/v1/batches", raw, "busy")
        assert busy.status_code == 409, busy.text
        assert busy.json()["status"] == "error"
        assert "still being processed" in busy.json()["message"]
        assert counts(client) == (0, 0)
        # A different body under an in-flight key is still the wrong request.
        assert post(client, "/v1/batches", b'{"base_prompt": "x"}', "busy").status_code == 422

        # A reservation whose holder died (its lock expired) is taken over.
        taken = post(client, "/v1/batches", raw, "abandoned")
        assert taken.status_code == 200, taken.text
        assert counts(client) == (1, 2)
        assert post(client, "/v1/batches", raw, "abandoned").json() == taken.json()


def test_keys_are_per_account(fast: Server) -> None:
    raw = json.dumps(BATCH).encode()
    with fast.client(fast.new_key()) as alice, fast.client(fast.new_key()) as bob:
        first = post(alice, "/v1/batches", raw, "shared-key")
        second = post(bob, "/v1/batches", raw, "shared-key")
        assert first.status_code == second.status_code == 200
        assert first.json()["batch_id"] != second.json()["batch_id"]
        assert "idempotent-replayed" not in second.headers
        assert counts(alice) == counts(bob) == (1, 2)


def test_an_idempotency_key_must_be_at_most_255_characters(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        resp = post(client, "/v1/batches", json.dumps(BATCH).encode(), "k" * 256)
        assert resp.status_code == 400
        assert "255" in resp.json()["message"]
        assert counts(client) == (0, 0)


def age(srv: Server, hours: float) -> None:
    """Move every stored Idempotency-Key `hours` into the past."""
    t = idempotency_keys.c
    with srv.db.write() as conn:
        rows = conn.execute(sa.select(t.account_id, t.key, t.created_at)).all()
        if rows:
            conn.execute(
                sa.update(idempotency_keys)
                .where(t.account_id == sa.bindparam("a"), t.key == sa.bindparam("k"))
                .values(created_at=sa.bindparam("c")),
                [{"a": a, "k": k, "c": c - timedelta(hours=hours)} for a, k, c in rows],
            )


def stored_keys(srv: Server) -> set[str]:
    with srv.db.read() as conn:
        return set(conn.execute(sa.select(idempotency_keys.c.key)).scalars())


def test_a_rejected_request_stores_nothing_so_a_corrected_retry_goes_through(
    fast: Server,
) -> None:
    bad = json.dumps({**BATCH, "call_data": [{"phone_number": "1234567890"}]}).encode()
    with fast.client(fast.new_key()) as client:
        for _ in range(2):
            rejected = post(client, "/v1/batches", bad, "fix-1")
            assert rejected.status_code == 400, rejected.text
            assert "idempotent-replayed" not in rejected.headers
        assert stored_keys(fast) == set()

        corrected = post(client, "/v1/batches", json.dumps(BATCH).encode(), "fix-1")
        assert corrected.status_code == 200, corrected.text
        assert counts(client) == (1, 2)
        replay = post(client, "/v1/batches", json.dumps(BATCH).encode(), "fix-1")
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == corrected.json()


def test_a_key_expires_after_the_ttl(fast: Server) -> None:
    raw = json.dumps(BATCH).encode()
    changed = json.dumps({**BATCH, "label": "changed"}).encode()
    with fast.client(fast.new_key()) as client:
        first = post(client, "/v1/batches", raw, "daily")
        assert first.status_code == 200, first.text
        age(fast, fast.settings.idempotency_ttl_hours - 1)
        assert post(client, "/v1/batches", changed, "daily").status_code == 422  # still held
        age(fast, 2)  # now a day and an hour old: expired
        later = post(client, "/v1/batches", changed, "daily")
        assert later.status_code == 200, later.text
        assert "idempotent-replayed" not in later.headers
        assert later.json()["batch_id"] != first.json()["batch_id"]
        assert counts(client) == (2, 4)
        again = post(client, "/v1/batches", changed, "daily")  # the new answer is held anew
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == later.json()


def test_expired_keys_are_swept_in_bounded_deletes(fast: Server) -> None:
    raw = json.dumps(BATCH).encode()
    key = fast.new_key()
    with fast.client(key) as client:
        for name in ("old-1", "old-2"):
            assert post(client, "/v1/batches", raw, name).status_code == 200
    with fast.db.write() as conn:
        account = account_by_key(conn, key)
        assert account is not None
        created = datetime.now(UTC)
        conn.execute(
            sa.insert(idempotency_keys),
            [
                {
                    "account_id": account.id,
                    "key": f"bulk-{i}",
                    "method_path": "POST /v1/batches",
                    "request_hash": "0" * 64,
                    "state": "done",
                    "status_code": 200,
                    "response": {},
                    "created_at": created,
                }
                for i in range(2500)
            ],
        )
    age(fast, fast.settings.idempotency_ttl_hours + 1)
    with fast.client(key) as client:
        assert post(client, "/v1/batches", raw, "fresh").status_code == 200
    wait_for(lambda: stored_keys(fast) == {"fresh"}, timeout=30)
