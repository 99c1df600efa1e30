"""Live progress over Server-Sent Events, through a real server on loopback (httpx streaming).

A batch run through the simulator (no agent) yields queued → started → answered →
ended for each answered call and one batch.completed, with strictly increasing ids;
resuming with Last-Event-ID gets exactly the rest; another account sees nothing.
On SQLite and PostgreSQL (the `server` fixture is parametrised over both).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from callfleet.config import Settings
from callfleet.store.accounts import create_account
from callfleet.store.db import Database
from callfleet.store.events import Tail, append_call_event, latest_id, prune_events
from callfleet.store.migrate import migrate
from callfleet.store.tables import events as events_table
from conftest import Server

OPEN = {"start": "00:00", "end": "24:00"}
PEOPLE = [f"+1212555{n:04d}" for n in range(100, 130)]  # 01XX, XX < 30: a person answers


@dataclass
class Sse:
    id: int
    event: str
    data: dict[str, Any]
    received: datetime


def read_events(response: httpx.Response) -> Iterator[Sse]:
    """Parse a text/event-stream body as it arrives (comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield Sse(
                    int(fields["id"]),
                    fields.get("event", "message"),
                    json.loads(fields["data"]),
                    datetime.now(UTC),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


def collect(
    server: Server,
    key: str,
    path: str,
    *,
    until: str | None = None,
    count: int | None = None,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> list[Sse]:
    """Read a stream until an event of kind `until` (or `count` events), then hang up."""
    got: list[Sse] = []
    with (
        server.client(key) as client,
        client.stream("GET", path, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + timeout
        for event in read_events(response):
            got.append(event)
            if event.event == until or (count is not None and len(got) >= count):
                break
            assert time.monotonic() < deadline, f"stream too slow: {[e.event for e in got]}"
    return got


def send_batch(server: Server, key: str, numbers: list[str]) -> str:
    body = {
        "base_prompt": "Remind them of the appointment.",
        "call_data": [{"phone_number": n} for n in numbers],
        "calling_window": OPEN,
    }
    with server.client(key) as client:
        res = client.post("/v1/batches", json=body)
        assert res.status_code == 200, res.text
        return str(res.json()["batch_id"])


@pytest.fixture
def fast(server_factory: Any) -> Server:
    srv: Server = server_factory(default_cps=1000, events_poll_s=0.1)
    return srv


def test_a_batch_streams_each_calls_life_then_its_completion(fast: Server) -> None:
    key = fast.new_key()
    numbers = PEOPLE[:5]
    batch_id = send_batch(fast, key, numbers)
    events = collect(fast, key, f"/v1/batches/{batch_id}/events", until="batch.completed")

    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    per_call: dict[str, list[str]] = {}
    for e in events:
        if e.event.startswith("call."):
            assert e.data["batch_id"] == batch_id
            per_call.setdefault(e.data["call_id"], []).append(e.event)
    assert len(per_call) == len(numbers)
    for call_id, kinds in per_call.items():
        assert kinds == ["call.queued", "call.started", "call.answered", "call.ended"], call_id
    assert [e.event for e in events if e.event.startswith("batch.")] == ["batch.completed"]
    assert events[-1].event == "batch.completed"
    assert events[-1].data["batch_id"] == batch_id
    # call.ended carries the call's details object, as GET /v1/calls/{id} shows it.
    ended = next(e for e in events if e.event == "call.ended")
    with fast.client(key) as client:
        details = client.get(f"/v1/calls/{ended.data['call_id']}").json()
    assert ended.data["status"] == details["status"] == "completed"
    assert ended.data["end_at"] == details["end_at"]
    assert ended.data["to"] == details["to"]
    started = next(e for e in events if e.event == "call.started")
    assert set(started.data) == {"call_id", "batch_id", "status", "at"}
    assert started.data["status"] == "dialing"


def test_last_event_id_resumes_with_exactly_the_rest(fast: Server) -> None:
    key = fast.new_key()
    batch_id = send_batch(fast, key, PEOPLE[:4])
    path = f"/v1/batches/{batch_id}/events"
    everything = collect(fast, key, path, until="batch.completed")
    for cut in (0, 3, 7, len(everything) - 2):
        last = everything[cut].id
        rest = collect(
            fast, key, path, headers={"Last-Event-ID": str(last)}, count=len(everything) - cut - 1
        )
        assert [e.id for e in rest] == [e.id for e in everything[cut + 1 :]]
        assert [e.event for e in rest] == [e.event for e in everything[cut + 1 :]]
    # The query parameter does the same, for clients that cannot set the header.
    rest = collect(fast, key, f"{path}?last_event_id={everything[5].id}", count=1)
    assert rest[0].id == everything[6].id


def test_a_stream_resumed_while_the_batch_runs_misses_nothing(fast: Server) -> None:
    """Hang up mid-batch, resume from the last id: the two halves are the whole, once."""
    key = fast.new_key()
    batch_id = send_batch(fast, key, PEOPLE[:20])
    path = f"/v1/batches/{batch_id}/events"
    first = collect(fast, key, path, count=25)
    second = collect(
        fast, key, path, headers={"Last-Event-ID": str(first[-1].id)}, until="batch.completed"
    )
    both = first + second
    ids = [e.id for e in both]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert sum(e.event == "call.ended" for e in both) == 20
    assert sum(e.event == "call.queued" for e in both) == 20


def test_account_stream_is_the_accounts_own(fast: Server) -> None:
    mine, theirs = fast.new_key("mine"), fast.new_key("theirs")
    seen: list[Sse] = []
    ready = threading.Event()
    their_client = fast.client(theirs)

    def watch_theirs() -> None:
        try:
            with their_client.stream("GET", "/v1/events") as response:
                ready.set()
                for event in read_events(response):
                    seen.append(event)
                    return
        except httpx.HTTPError:
            return  # closed by the test below

    watcher = threading.Thread(target=watch_theirs, daemon=True)
    watcher.start()
    assert ready.wait(10)
    batch_id = send_batch(fast, mine, PEOPLE[:3])
    own = collect(fast, mine, "/v1/events?last_event_id=0", until="batch.completed")
    assert {e.data["batch_id"] for e in own} == {batch_id}
    # Their batch stream of my batch is a 404, their account stream got nothing.
    with fast.client(theirs) as client:
        assert client.get(f"/v1/batches/{batch_id}/events").status_code == 404
    time.sleep(1.0)
    their_client.close()
    watcher.join(10)
    assert seen == []


def test_bad_last_event_id_is_a_400_naming_it(fast: Server) -> None:
    key = fast.new_key()
    batch_id = send_batch(fast, key, PEOPLE[:1])
    with fast.client(key) as client:
        res = client.get(f"/v1/batches/{batch_id}/events", headers={"Last-Event-ID": "abc"})
        assert res.status_code == 400
        assert "Last-Event-ID" in res.text
        res = client.get("/v1/events", params={"last_event_id": -1})
        assert res.status_code == 400
        assert "last_event_id" in res.text


def test_time_from_call_end_to_the_stream(server_factory: Any) -> None:
    """Median time from a call's `ended_at` to its call.ended arriving, at the default
    0.5 s poll (printed for the report); the stream is open before the batch is sent."""
    server: Server = server_factory(default_cps=1000)
    key = server.new_key()
    got: list[Sse] = []
    ready = threading.Event()

    def watch() -> None:
        with (
            server.client(key) as client,
            client.stream("GET", "/v1/events") as response,
        ):
            ready.set()
            for event in read_events(response):
                got.append(event)
                if event.event == "batch.completed":
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(10)
    send_batch(server, key, PEOPLE[:30])
    watcher.join(60)
    lags = [
        (e.received - datetime.fromisoformat(e.data["end_at"])).total_seconds()
        for e in got
        if e.event == "call.ended"
    ]
    assert len(lags) == 30
    median = statistics.median(lags)
    print(f"\ncall end → SSE event: median {median * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms")
    assert median < 2.0


def _account(db: Database, name: str) -> str:
    with db.write() as conn:
        return create_account(conn, name).id


def test_an_uncommitted_event_holds_the_tail_back_not_skipped(pg_url: str, tmp_path: Path) -> None:
    """An id taken by a transaction still open (PostgreSQL hands ids out before commit;
    SQLite serialises writers, so there it cannot happen) is waited for: the tail does
    not pass it while a later id is already visible."""
    db = Database(Settings(data_dir=tmp_path, database_url=pg_url).sqlalchemy_url)
    migrate(db)
    account = _account(db, "a")
    now = datetime.now(UTC)
    tail = Tail(account, 0, gap_grace_s=30.0)
    slow = db.engine.connect()
    slow_tx = slow.begin()
    append_call_event(slow, account, "c1", None, "call.started", "dialing", now)
    with db.write() as conn:
        append_call_event(conn, account, "c2", None, "call.started", "dialing", now)
    with db.read() as conn:
        assert tail.poll(conn) == []  # id 2 is visible, id 1 not yet: wait
    slow_tx.commit()
    slow.close()
    with db.read() as conn:
        got = tail.poll(conn)
    assert [e.payload["call_id"] for e in got] == ["c1", "c2"]
    db.dispose()


def test_a_hole_is_given_up_after_the_grace_and_pruning_is_bounded(db: Database) -> None:
    account = _account(db, "a")
    now = datetime.now(UTC)
    with db.write() as conn:
        for n in range(5):
            append_call_event(conn, account, f"c{n}", None, "call.queued", "queued", now)
        first = latest_id(conn) - 4
        conn.execute(sa.delete(events_table).where(events_table.c.id == first + 1))  # a hole
    tail = Tail(account, first - 1, gap_grace_s=5.0)
    with db.read() as conn:
        assert [e.id for e in tail.poll(conn, mono=100.0)] == [first]  # waits at the hole
        assert tail.poll(conn, mono=102.0) == []
        assert [e.id for e in tail.poll(conn, mono=105.5)] == [first + 2, first + 3, first + 4]
    # Old rows go in bounded deletes; a hole left by pruning does not hold a tail back.
    with db.write() as conn:
        assert prune_events(conn, now + timedelta(seconds=1), limit=3) == 3
        assert prune_events(conn, now + timedelta(seconds=1), limit=3) == 1
        assert prune_events(conn, now + timedelta(seconds=1), limit=3) == 0
        append_call_event(
            conn, account, "late", None, "call.queued", "queued", now - timedelta(minutes=1)
        )
    with db.read() as conn:
        got = Tail(account, 0, gap_grace_s=5.0).poll(conn)
    assert [e.payload["call_id"] for e in got] == ["late"]


def test_stopping_a_batch_streams_stopped_then_its_cancelled_calls(fast: Server) -> None:
    key = fast.new_key()
    body = {
        "base_prompt": "Hello.",
        "call_data": [{"phone_number": n} for n in PEOPLE[:3]],
        # Not before tomorrow: the calls wait in the queue, stoppable.
        "start_time": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    with fast.client(key) as client:
        batch_id = client.post("/v1/batches", json=body).json()["batch_id"]
        assert client.post(f"/v1/batches/{batch_id}/stop").status_code == 200
        assert client.post(f"/v1/batches/{batch_id}/stop").status_code == 200  # again: no event
    got = collect(fast, key, f"/v1/batches/{batch_id}/events", until="batch.completed")
    kinds = [e.event for e in got]
    assert kinds == ["call.queued"] * 3 + ["batch.stopped"] + ["call.ended"] * 3 + [
        "batch.completed"
    ]
    assert {e.data["status"] for e in got if e.event == "call.ended"} == {"canceled"}
    assert got[3].data["status"] == "stopped"


def test_an_idle_stream_gets_heartbeat_comments(server_factory: Any) -> None:
    srv: Server = server_factory(events_heartbeat_s=0.3)
    key = srv.new_key()
    lines: list[str] = []
    with srv.client(key) as client, client.stream("GET", "/v1/events") as response:
        assert response.headers["cache-control"] == "no-store"
        for line in response.iter_lines():
            lines.append(line)
            if sum(x.startswith(":") for x in lines) >= 2:
                break
    assert all(x.startswith(": ping") or x == "" for x in lines), lines
