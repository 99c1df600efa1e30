"""Bounds on what one request may hold: the body cap, the per-field caps, the
storage a batch costs, and the SQLite write lock held while a batch is prepared.

Every test drives a real server over HTTP (SQLite and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from callfleet.api.routes import batches as batches_routes
from callfleet.domain.call_fields import (
    BATCH_LIMITS,
    CALL_FIELDS,
    FIELD_LIMITS,
    limits_markdown,
)
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store import calls as call_store
from callfleet.telephony.carrier import CallEvents, DialRequest, DialResult
from conftest import Server

GOOD = {"phone_number": "+12125550101", "name": "Ada"}


def _raw_post(srv: Server, key: str, head: list[str], chunks: list[bytes]) -> tuple[int, bytes]:
    """POST by hand on a socket (httpx will not send a lying Content-Length).

    Head and body go out in one write, so the server has every byte in hand when
    it answers: a server that answers 413 and closes with bytes still unread in
    its socket makes the kernel send a reset, which can discard the answer before
    the client reads it (a race of the test's own making, not of the server's).
    """
    url = urlsplit(srv.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        lines = [
            "POST /v1/batches HTTP/1.1",
            f"Host: {url.hostname}",
            f"authorization: {key}",
            "content-type: application/json",
            "connection: close",
            *head,
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"".join(chunks))
        data = b""
        for _ in range(10_000):
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break  # whatever arrived before the reset is the answer
            if not part:
                break
            data += part
    assert data, "the server closed the connection without an answer"
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _assert_413(status: int, body: bytes) -> None:
    assert status == 413, body[:300]
    if b"\r\n" in body[:8]:  # chunked answer: take the first chunk
        body = body.split(b"\r\n", 2)[1]
    envelope = json.loads(body)
    assert envelope["status"] == "error"
    assert "1000" in envelope["message"] and "CALLFLEET_MAX_BODY_BYTES" in envelope["message"]
    assert [e["field"] for e in envelope["errors"]] == ["body"]


def test_a_body_over_the_cap_is_413_naming_the_limit(server_factory: Any) -> None:
    srv: Server = server_factory(max_body_bytes=1000)
    key = srv.new_key()
    big = {"base_prompt": "x" * 2000, "call_data": [GOOD]}
    with srv.client(key) as client:
        resp = client.post("/v1/batches", json=big)
        _assert_413(resp.status_code, resp.content)
        small = client.post("/v1/batches", json={"base_prompt": "Hi", "call_data": [GOOD]})
        assert small.status_code == 200, small.text
    # Chunked, without Content-Length: counted while reading.
    payload = json.dumps(big).encode()
    chunks = [
        b"%x\r\n%s\r\n" % (len(payload[i : i + 500]), payload[i : i + 500])
        for i in range(0, len(payload), 500)
    ] + [b"0\r\n\r\n"]
    _assert_413(*_raw_post(srv, key, ["transfer-encoding: chunked"], chunks))
    # The same body sent whole with its Content-Length, and a Content-Length that
    # claims more than the cap (refused before reading, whatever actually follows).
    _assert_413(*_raw_post(srv, key, [f"content-length: {len(payload)}"], [payload]))
    _assert_413(*_raw_post(srv, key, ["content-length: 99999999"], [b"{"]))


# --- per-field caps -----------------------------------------------------------------

# One value over its limit for each field the audit found unbounded, and a few more.
OVER: list[tuple[str, Any]] = [
    ("base_prompt", "x" * 50_001),
    ("first_sentence", "x" * 2001),
    ("voicemail_message", "x" * 2001),
    ("metadata", {"k": "x" * 20_000}),
    ("metadata", {f"k{i}": i for i in range(101)}),
    ("request_data", {"k": "x" * 20_000}),
    ("keywords", ["w"] * 101),
    ("keywords", ["w" * 101]),
    ("pronunciation_guide", [{"word": f"w{i}", "pronunciation": "p"} for i in range(101)]),
    ("transfer_list", {f"d{i}": "+12125550199" for i in range(51)}),
    ("script", ["line"] * 101),
    ("tools", [{"name": f"t{i}", "description": "d"} for i in range(21)]),
    ("dynamic_data", [{"url": "https://example.com/x"}] * 11),
    ("analysis_schema", {f"k{i}": "string" for i in range(101)}),
    ("dispositions", ["t"] * 101),
    ("label", "x" * 501),
    ("campaign_id", "x" * 201),
    ("metadata", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}),
]


def test_every_field_over_its_limit_is_a_400_naming_field_and_limit(server: Server) -> None:
    with server.client(server.new_key()) as client:
        for name, value in OVER:
            case = f"{name}={json.dumps(value)[:40]}"
            body = {"base_prompt": "Hi {{name}}", "call_data": [GOOD], name: value}
            resp = client.post("/v1/batches", json=body)
            assert resp.status_code == 400, f"[{case}] {resp.status_code}: {resp.text[:300]}"
            errors = resp.json()["errors"]
            assert errors and errors[0]["field"].split("[")[0].split(".")[0] == name, case
            assert "at most" in errors[0]["message"].lower(), f"[{case}] {errors}"
            # The same value in a row: that row is refused, named with its index.
            if name in ("base_prompt", "label", "campaign_id"):
                continue
            rows = [GOOD, {"phone_number": "+12125550102", "name": "Bob", name: value}]
            resp = client.post(
                "/v1/batches", json={"base_prompt": "Hi {{name}}", "call_data": rows}
            )
            assert resp.status_code == 200, f"[row {case}] {resp.text[:300]}"
            rejected = resp.json()["rejected"]
            assert [r["index"] for r in rejected] == [1], f"[row {case}] {rejected}"
            assert rejected[0]["errors"][0]["field"].startswith(f"call_data[1].{name}"), case
            assert "at most" in rejected[0]["errors"][0]["message"].lower(), case


def test_a_row_over_its_size_is_a_400_naming_the_row(server: Server) -> None:
    row = {"phone_number": "+12125550102", "notes": "x" * 70_000}
    with server.client(server.new_key()) as client:
        resp = client.post("/v1/batches", json={"base_prompt": "Hi", "call_data": [GOOD, row]})
        assert resp.status_code == 400, resp.text[:300]
        errors = resp.json()["errors"]
        assert [e["field"] for e in errors] == ["call_data[1]"]
        assert "65536 bytes" in errors[0]["message"]


def test_every_field_of_the_model_has_a_documented_limit() -> None:
    assert set(FIELD_LIMITS) == CALL_FIELDS
    for name, limit in {**FIELD_LIMITS, **BATCH_LIMITS}.items():
        assert limit.describe().strip(), name
    assert {"base_prompt", "label", "campaign_id", "batch_webhook", "call_data"} <= set(
        BATCH_LIMITS
    )
    assert all(f"| `{name}` |" in limits_markdown() for name in CALL_FIELDS)


# --- the SQLite write lock ----------------------------------------------------------


class _ConcurrentWriter:
    """A process that commits a short write transaction (`Database.write`, so
    `BEGIN IMMEDIATE` on SQLite) every 10 ms until stopped; `writes` holds each one's
    (began, committed) on the machine's monotonic clock, which processes share."""

    _SCRIPT = """
import json, pathlib, sys, time
import sqlalchemy as sa
from callfleet.store.db import Database
db = Database(sys.argv[1])
stop = pathlib.Path(sys.argv[2])
writes = []
print("ready", flush=True)
while not stop.exists():
    began = time.monotonic()
    with db.write() as conn:
        conn.execute(sa.text("SELECT 1"))
    writes.append((began, time.monotonic()))
    time.sleep(0.01)
print(json.dumps(writes), flush=True)
"""

    def __init__(self, url: str, tmp_path: Any) -> None:
        self.stop = tmp_path / "writer.stop"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._SCRIPT, url, str(self.stop)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.writes: list[tuple[float, float]] = []

    def __enter__(self) -> _ConcurrentWriter:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready", "the writer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.touch()
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, "the concurrent writer failed"
        self.writes = [(a, b) for a, b in json.loads(out)]


def test_a_large_batch_holds_the_write_lock_only_to_insert(
    server_factory: Any, monkeypatch: Any, tmp_path: Any
) -> None:
    """A big batch is prepared in a read transaction and only inserted under the write
    lock, so a concurrent writer's short transactions go on committing while it is
    prepared (before, the batch was prepared inside `BEGIN IMMEDIATE` and the writer
    waited it all out, long enough on a large batch for the lease reaper to find live
    calls expired). The server's own transactions are watched, and no wall time is
    compared with another: whether the preparation sits inside the lock is a fact of
    the code, not of how busy the machine is."""
    # The dispatcher's passes are spaced out: a pass's write transaction, started while
    # this process's GIL is busy preparing the batch, would hold the lock as long as
    # its thread waits for the GIL (SQLite's lock belongs to the database, the GIL to
    # the process; with one process it is the CPU that decides).
    server: Server = server_factory(hopper_interval_s=30)
    rows = [
        {"phone_number": f"+1212555{i:04d}", "name": f"n{i}", "plan": "gold" * 20}
        for i in range(10_000)
    ]
    body = {
        "base_prompt": "Hello {{name}}, about your {{plan}} plan. " * 20,
        "first_sentence": "Hi {{name}}",
        "metadata": {"source": "limits"},
        "call_data": rows,
    }
    key = server.new_key()
    db = server.db
    real_write = db.write
    writing: dict[int, float] = {}  # thread → when its open write transaction began
    seen: dict[str, Any] = {"prepared_in_write": [], "insert_held": []}

    @contextlib.contextmanager
    def watched_write() -> Any:
        me = threading.get_ident()
        writing[me] = time.monotonic()
        try:
            with real_write() as conn:
                yield conn
        finally:
            began = writing.pop(me)
            if seen.get("inserting") == me:
                seen["insert_held"].append(time.monotonic() - began)
                seen.pop("inserting")

    real_prepare = batches_routes._prepare
    real_insert = call_store.insert_calls

    def watched_prepare(*args: Any, **kwargs: Any) -> Any:
        seen["prepared_in_write"].append(threading.get_ident() in writing)
        started = time.monotonic()
        try:
            return real_prepare(*args, **kwargs)
        finally:
            seen["preparing"] = (started, time.monotonic())

    def watched_insert(conn: Any, account_id: str, call_rows: Any) -> None:
        if len(call_rows) == len(rows):
            seen["inserting"] = threading.get_ident()
        real_insert(conn, account_id, call_rows)

    monkeypatch.setattr(db, "write", watched_write)
    monkeypatch.setattr(batches_routes, "_prepare", watched_prepare)
    monkeypatch.setattr(call_store, "insert_calls", watched_insert)
    # The concurrent writer is another process, as a worker would be: a thread of this
    # one would share the server's GIL and wait on its CPU work, not on the database.
    with (
        _ConcurrentWriter(db.url, tmp_path) as writer,
        httpx.Client(base_url=server.base_url, timeout=120) as client,
    ):
        resp = client.post("/v1/batches", json=body, headers={"authorization": key})
    writes = writer.writes
    monkeypatch.undo()
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["call_count"] == 10_000
    # The rows were prepared (rendered, checked, looked up) outside any write transaction,
    assert seen["prepared_in_write"] == [False]
    # and while they were being prepared, the concurrent writer went on committing.
    # (With the preparation inside `BEGIN IMMEDIATE`, a write begun after it had started
    # waits for the batch's commit: at most the one write that took the lock just
    # before the batch's transaction did can begin and commit inside the window.)
    began, ended = seen["preparing"]
    during = [w for w in writes if began <= w[0] and w[1] <= ended]
    assert len(during) >= 2, (
        f"{len(during)} writes committed during the {ended - began:.2f} s the batch "
        f"was prepared ({len(writes)} writes in all)"
    )
    assert len(seen["insert_held"]) == 1


# --- batch-level fields stored once -------------------------------------------------


def _stored_bytes(srv: Server, batch_id: str) -> int:
    """What the batch and its calls' parameters take in the database."""
    with srv.db.read() as conn:
        total = 0
        for table, where in (("batches", "id"), ("calls", "batch_id")):
            row = conn.execute(
                sa.text(
                    f"SELECT SUM(LENGTH(COALESCE(CAST(task AS TEXT), '')) "
                    f"+ LENGTH(CAST(params AS TEXT)) + LENGTH(CAST(request_data AS TEXT)) "
                    f"+ LENGTH(COALESCE(CAST(metadata AS TEXT), ''))) FROM {table} "
                    f"WHERE {where} = :b"
                )
                if table == "calls"
                else sa.text(
                    "SELECT LENGTH(base_prompt) + LENGTH(CAST(call_params AS TEXT)) "
                    "FROM batches WHERE id = :b"
                ),
                {"b": batch_id},
            ).scalar()
            total += int(row or 0)
    return total


def test_batch_level_fields_are_stored_once_not_per_row(server: Server) -> None:
    prompt = "You call {{name}} at {{phone_number}} about {{plan}}. " + "Be kind. " * 2000
    rows = [{"phone_number": f"+1212555{i:04d}", "name": f"n{i}"} for i in range(500)]
    rows[7] = {**rows[7], "metadata": {"row": 7}, "first_sentence": "Yo {{name}}"}
    body = {
        "base_prompt": prompt,
        "first_sentence": "Hi {{name}}",
        "request_data": {"plan": "gold"},
        "metadata": {"source": "x" * 4000},
        "call_data": rows,
    }
    raw = json.dumps(body).encode()
    with server.client(server.new_key()) as client:
        resp = client.post("/v1/batches", json=body)
        assert resp.status_code == 200, resp.text[:300]
        batch_id = resp.json()["batch_id"]
        ratio = _stored_bytes(server, batch_id) / len(raw)
        assert ratio <= 2, f"{ratio:.1f} stored bytes per request byte"
        # What a call shows is the batch's values merged with the row's own.
        calls = client.get("/v1/calls", params={"batch_id": batch_id, "limit": 1000}).json()
        by_number = {c["to"]: c["call_id"] for c in calls["calls"]}
        one = client.get(f"/v1/calls/{by_number['+12125550003']}").json()
        assert one["metadata"] == {"source": "x" * 4000}
        assert one["request_data"] == {"plan": "gold", "name": "n3", "phone_number": "+12125550003"}
        assert one["variables"]["plan"] == "gold"
        seven = client.get(f"/v1/calls/{by_number['+12125550007']}").json()
        assert seven["metadata"] == {"row": 7}


class CapturingCarrier:
    """The simulator, keeping every DialRequest it is asked to place."""

    def __init__(self) -> None:
        self.inner = SimulatedCarrier(time_scale=0.0)
        self.requests: dict[str, DialRequest] = {}

    def describe(self) -> str:
        return "capturing " + self.inner.describe()

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.requests[request.to_number] = request
        result: DialResult = await self.inner.place_call(request, events)
        return result


def test_the_dialler_gets_the_batch_fields_merged_with_the_rows(server_factory: Any) -> None:
    carrier = CapturingCarrier()
    srv: Server = server_factory(carrier, default_cps=1000)
    body = {
        "base_prompt": "Call {{name}} for {{company}}.",
        "first_sentence": "Hi {{name}}",
        "request_data": {"company": "Acme"},
        "metadata": {"m": 1},
        "calling_window": {"start": "00:00", "end": "24:00"},
        "call_data": [
            {"phone_number": "+12125550101", "name": "Ada"},
            {"phone_number": "+12125550102", "name": "Bob", "metadata": {"m": 2}, "record": True},
        ],
    }
    with srv.client(srv.new_key()) as client:
        assert client.post("/v1/batches", json=body).status_code == 200
    deadline = time.monotonic() + 20
    while len(carrier.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    ada, bob = carrier.requests["+12125550101"], carrier.requests["+12125550102"]
    assert ada.params["task"] == "Call Ada for Acme."
    assert ada.params["first_sentence"] == "Hi Ada"
    assert ada.params["metadata"] == {"m": 1}
    assert ada.params["request_data"] == {
        "company": "Acme",
        "name": "Ada",
        "phone_number": "+12125550101",
    }
    assert bob.params["task"] == "Call Bob for Acme." and bob.params["metadata"] == {"m": 2}
    assert bob.record and not ada.record
