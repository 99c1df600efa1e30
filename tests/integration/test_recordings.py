"""Recordings through the real server: real SIP calls to the built-in phone simulator
(agent off, so the line recorder writes the callee's side), uploaded to a real storage
(a local directory, or moto's S3 server on loopback), on SQLite and PostgreSQL.

Serving with `Range`, the presigned redirect, deletion, the retention sweeper, a
failed upload retried from its durable record, and erasure by phone number.
"""

from __future__ import annotations

import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from callfleet.storage import Storage, open_storage
from callfleet.store.tables import (
    call_analyses,
    calls,
    dnc,
    erasures,
    recording_uploads,
    transcript_turns,
    webhook_deliveries,
)
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
PERSON = "+12125550101"
"""A simulator number where a person answers."""
ENDED = ("completed", "failed", "no-answer", "busy", "declined", "canceled", "voicemail")


@pytest.fixture(params=["local", "s3"])
def storage_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Where the server keeps recordings; S3 through the standard AWS variables."""
    if request.param == "local":
        return f"file://{tmp_path / 'objects'}"
    s3: Any = request.getfixturevalue("s3_server")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3.make_bucket()}/calls"


def make_server(server_factory: Any, storage_url: str, **overrides: Any) -> Server:
    srv: Server = server_factory(sip=True, storage_url=storage_url, **overrides)
    return srv


def call_and_wait(client: httpx.Client, number: str = PERSON, **fields: Any) -> dict[str, Any]:
    body = {"phone_number": number, "task": "Hi", "record": True, "calling_window": OPEN, **fields}
    sent = client.post("/v1/calls", json=body)
    assert sent.status_code == 200, sent.text
    call_id = sent.json()["call_id"]

    def ended() -> dict[str, Any] | None:
        details: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
        return details if details["status"] in ENDED else None

    return wait_for(ended, timeout=60)


def storage_of(url: str) -> Storage:
    return open_storage(url)


def test_a_recording_is_uploaded_before_the_webhook_and_served_with_ranges(
    server_factory: Any, storage_url: str, tmp_path: Path
) -> None:
    # Time scale 0.1: the simulated person speaks, so the WAV has real audio.
    srv = make_server(server_factory, storage_url, agent_enabled=False, simulator_time_scale=0.1)
    with srv.client(srv.new_key()) as client, srv.client(srv.new_key("other")) as other:
        call = call_and_wait(client, webhook="http://127.0.0.1:9/hook")
        assert call["status"] == "completed"
        assert call["recording_state"] == "stored"
        key = f"recordings/{call['call_id']}-1.wav"
        stored = storage_of(storage_url)
        size = stored.size(key)
        assert size is not None and size > 10_000
        # The webhook's payload was built after the upload: it says `stored`.
        with srv.db.read() as conn:
            payload = conn.execute(
                sa.select(webhook_deliveries.c.payload).where(
                    webhook_deliveries.c.call_id == call["call_id"]
                )
            ).scalar_one()
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(recording_uploads)).scalar()
                == 0
            )
        assert (payload["recording_state"], payload["recording_url"]) == (
            "stored",
            f"/v1/calls/{call['call_id']}/recording",
        )
        # The worker's own copy is gone once the storage has it (it is not the object).
        assert not (tmp_path / "recordings" / f"{call['call_id']}-1.wav").exists()

        url = f"/v1/calls/{call['call_id']}/recording"
        whole = client.get(url)
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
        assert int(whole.headers["content-length"]) == size == len(whole.content)
        with wave.open(_file(tmp_path / "got.wav", whole.content)) as wav:
            assert (wav.getnchannels(), wav.getframerate()) == (1, 8000)
            assert wav.getnframes() > 4000
        part = client.get(url, headers={"range": "bytes=100-1123"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-1123/{size}"
        assert part.content == whole.content[100:1124]
        tail = client.get(url, headers={"range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, whole.content[-10:])
        seek = client.get(url, headers={"range": f"bytes={size - 3}-"})
        assert (seek.status_code, seek.content) == (206, whole.content[-3:])
        past = client.get(url, headers={"range": f"bytes={size}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{size}"
        # Another account learns nothing, not even that the call exists.
        assert other.get(url).status_code == 404


def _file(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_delete_removes_the_object_and_says_so_in_the_call(
    server_factory: Any, storage_url: str
) -> None:
    srv = make_server(server_factory, storage_url, simulator_time_scale=0.0)
    with srv.client(srv.new_key()) as client, srv.client(srv.new_key("other")) as other:
        call = call_and_wait(client)
        key = f"recordings/{call['call_id']}-1.wav"
        assert storage_of(storage_url).size(key) is not None
        url = f"/v1/calls/{call['call_id']}/recording"
        assert other.delete(url).status_code == 404
        gone = client.delete(url)
        assert gone.status_code == 200, gone.text
        body = gone.json()
        assert body["recording_state"] == "deleted" and body["recording_deleted_at"]
        assert storage_of(storage_url).size(key) is None
        again = client.get(url)
        assert again.status_code == 410
        assert "deleted" in again.json()["message"]
        assert client.delete(url).status_code == 200  # idempotent
        assert client.get(f"/v1/calls/{call['call_id']}").json()["recording_state"] == "deleted"


def test_presigned_redirect_only_after_the_account_check(
    server_factory: Any, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.make_bucket()}/p"
    srv = make_server(server_factory, url, simulator_time_scale=0.0, storage_presign=True)
    with srv.client(srv.new_key()) as client, srv.client(srv.new_key("other")) as other:
        call = call_and_wait(client)
        path = f"/v1/calls/{call['call_id']}/recording"
        redirect = client.get(path)
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(s3_server.endpoint) and "X-Amz-Signature=" in location
        fetched = httpx.get(location)
        assert fetched.status_code == 200 and fetched.content.startswith(b"RIFF")
        refused = other.get(path)
        assert refused.status_code == 404 and "location" not in refused.headers


def test_the_sweeper_deletes_recordings_past_their_retention(
    server_factory: Any, storage_url: str
) -> None:
    srv = make_server(
        server_factory, storage_url, simulator_time_scale=0.0, recording_retention_days=30
    )
    with srv.client(srv.new_key()) as client:
        kept = call_and_wait(client)
        short = call_and_wait(client, retention_days=1)
        bad = client.post(
            "/v1/calls",
            json={"phone_number": PERSON, "task": "Hi", "retention_days": 0},
        )
        assert bad.status_code == 400 and "retention_days" in bad.text
        batch = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": "+12125550103"}],
                "calling_window": OPEN,
                "record": True,
                "retention_days": 3,
            },
        )
        assert batch.status_code == 200, batch.text

        def batch_call() -> dict[str, Any] | None:
            got = client.get("/v1/calls", params={"batch_id": batch.json()["batch_id"]}).json()
            found = got["calls"][0]["call_id"] if got["calls"] else None
            details = client.get(f"/v1/calls/{found}").json() if found else None
            return details if details and details["recording_state"] == "stored" else None

        in_batch = wait_for(batch_call, timeout=60)
        for call, days in ((kept, 30), (short, 1), (in_batch, 3)):
            ends = datetime.fromisoformat(call["end_at"])
            expires = datetime.fromisoformat(call["recording_expires_at"])
            assert abs((expires - ends) - timedelta(days=days)) < timedelta(seconds=1)
        # A day later (the database's clock moved instead of the test's).
        with srv.db.write() as conn:
            conn.execute(
                sa.update(calls)
                .where(calls.c.id == short["call_id"])
                .values(recording_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )

        def expired() -> dict[str, Any] | None:
            details: dict[str, Any] = client.get(f"/v1/calls/{short['call_id']}").json()
            return details if details["recording_state"] == "expired" else None

        details = wait_for(expired, timeout=15)
        assert details["recording_expired_at"] is not None
        store = storage_of(storage_url)
        assert store.size(f"recordings/{short['call_id']}-1.wav") is None
        assert store.size(f"recordings/{kept['call_id']}-1.wav") is not None
        gone = client.get(f"/v1/calls/{short['call_id']}/recording")
        assert gone.status_code == 410 and "retention" in gone.json()["message"]
        assert client.get(f"/v1/calls/{kept['call_id']}/recording").status_code == 200


def test_a_failed_upload_is_retried_from_its_record(
    server_factory: Any, s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"late-{datetime.now(UTC).strftime('%H%M%S%f')}"
    srv = make_server(server_factory, f"s3://{bucket}/r", simulator_time_scale=0.0)
    with srv.client(srv.new_key()) as client:
        call = call_and_wait(client)  # the bucket does not exist yet: the upload fails
        assert call["recording_state"] == "uploading"
        path = f"/v1/calls/{call['call_id']}/recording"
        waiting = client.get(path)
        assert waiting.status_code == 503 and waiting.headers["retry-after"] == "5"
        local = tmp_path / "recordings" / f"{call['call_id']}-1.wav"
        assert local.exists()  # kept until the storage has it
        with srv.db.read() as conn:
            row = conn.execute(sa.select(recording_uploads)).one()
        assert row.attempts >= 1 and "NoSuchBucket" in (row.last_error or "")
        import boto3

        boto3.client("s3").create_bucket(Bucket=bucket)

        def stored() -> bool:
            return bool(
                client.get(f"/v1/calls/{call['call_id']}").json()["recording_state"] == "stored"
            )

        wait_for(stored, timeout=30)
        got = client.get(path)
        assert got.status_code == 200 and got.content.startswith(b"RIFF")
        assert not local.exists()
        with srv.db.read() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(recording_uploads)).scalar()
                == 0
            )


def _add_content(srv: Server, call_id: str, account_id: str) -> None:
    """What post-call work and the agent would have left on an answered call."""
    now = datetime.now(UTC)
    with srv.db.write() as conn:
        conn.execute(
            sa.insert(transcript_turns),
            [
                {"call_id": call_id, "user": "user", "text": "I am Ann Smith", "created_at": now},
                {"call_id": call_id, "user": "assistant", "text": "Hi Ann", "created_at": now},
            ],
        )
        conn.execute(
            sa.update(calls)
            .where(calls.c.id == call_id)
            .values(summary="Ann Smith wants a call back", analysis={"name": "Ann Smith"})
        )
        conn.execute(
            sa.insert(call_analyses).values(
                account_id=account_id,
                call_id=call_id,
                goal="name",
                questions=[["name?", "string"]],
                answers=["Ann Smith"],
                created_at=now,
            )
        )


def test_erasure_by_phone_number(server_factory: Any, storage_url: str, tmp_path: Path) -> None:
    srv = make_server(server_factory, storage_url, simulator_time_scale=0.0)
    key = srv.new_key()
    with srv.client(key) as client:
        first = call_and_wait(client, request_data={"name": "Ann Smith"})
        second = call_and_wait(client, metadata={"crm": "ann"})
        kept = call_and_wait(client, "+12125550102")
        later = client.post(
            "/v1/calls",
            json={
                "phone_number": PERSON,
                "task": "Hi {{name}}",
                "request_data": {"name": "Ann"},
                "start_time": "2099-01-01 10:00:00 +00:00",
            },
        )
        assert later.status_code == 200, later.text
        with srv.db.read() as conn:
            account_id = conn.execute(
                sa.select(calls.c.account_id).where(calls.c.id == first["call_id"])
            ).scalar_one()
        for call in (first, second, kept):
            _add_content(srv, call["call_id"], account_id)
        # As if `first` had been retried: its second attempt's recording is stored too.
        with srv.db.write() as conn:
            conn.execute(sa.update(calls).where(calls.c.id == first["call_id"]).values(attempt=2))
        extra = tmp_path / "attempt-2.wav"
        extra.write_bytes(b"RIFF-second-attempt")
        storage_of(storage_url).put_file(f"recordings/{first['call_id']}-2.wav", extra)

        bad = client.post("/v1/erasure", json={"phone_number": "12"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "phone_number"
        assert client.post("/v1/erasure", json={}).status_code == 400

        done = client.post("/v1/erasure", json={"phone_number": "(212) 555-0101"})
        assert done.status_code == 200, done.text
        result = done.json()
        assert result["phone_number"] == PERSON
        assert (result["calls"], result["recordings"], result["transcript_turns"]) == (3, 2, 4)
        assert (result["summaries"], result["analyses"], result["row_properties"]) == (2, 2, 3)
        assert (result["live_calls"], result["added_to_dnc"]) == (0, True)
        hashed = result["erased_as"]
        assert hashed.startswith("erased-") and len(hashed) == 20

        store = storage_of(storage_url)
        for call in (first, second):
            details = client.get(f"/v1/calls/{call['call_id']}").json()
            assert details["to"] == hashed
            assert {t["text"] for t in details["transcripts"]} == {"erased"}
            assert (details["summary"], details["analysis"]) == ("erased", "erased")
            assert details["recording_state"] == "erased" and details["recording_deleted_at"]
            assert PERSON not in str(details) and "Ann" not in str(details)
            assert store.size(f"recordings/{call['call_id']}-1.wav") is None
            assert client.get(f"/v1/calls/{call['call_id']}/recording").status_code == 410
        assert store.size(f"recordings/{first['call_id']}-2.wav") is None
        cancelled = client.get(f"/v1/calls/{later.json()['call_id']}").json()
        assert cancelled["status"] == "canceled" and cancelled["to"] == hashed
        untouched = client.get(f"/v1/calls/{kept['call_id']}").json()
        assert untouched["summary"] == "Ann Smith wants a call back"
        assert untouched["recording_state"] == "stored"
        assert client.get(f"/v1/dnc/{PERSON}").json()["on_list"] is True

        again = client.post("/v1/erasure", json={"phone_number": PERSON}).json()
        assert (again["calls"], again["recordings"], again["transcript_turns"]) == (3, 0, 0)
        assert (again["summaries"], again["analyses"], again["added_to_dnc"]) == (0, 0, False)
        assert again["erased_as"] == hashed

    with srv.db.read() as conn:
        entry = conn.execute(sa.select(dnc).where(dnc.c.phone_number == PERSON)).one()
        audits = conn.execute(sa.select(erasures).order_by(erasures.c.created_at)).all()
        stray = conn.execute(
            sa.select(sa.func.count()).select_from(calls).where(calls.c.to_number == PERSON)
        ).scalar()
    assert (entry.reason, entry.source) == ("erasure", "erasure")
    assert [(a.calls, a.recordings, a.transcript_turns) for a in audits] == [(3, 2, 4), (3, 0, 0)]
    assert all(a.key_id and a.account_id == account_id for a in audits)
    assert all(PERSON not in a.number_hash for a in audits)
    assert stray == 0


@pytest.mark.parametrize("keep", [False, True])
def test_the_simulators_own_recordings_live_only_while_it_runs(tmp_path: Path, keep: bool) -> None:
    import asyncio

    from callfleet.simulator.sip_server import SimulatorConfig, SipSimulatorCarrier

    folder = tmp_path / "simulator"
    folder.mkdir()
    left_over = folder / "earlier-run.wav"
    left_over.write_bytes(b"RIFF")
    carrier = SipSimulatorCarrier(
        SimulatorConfig(time_scale=0.0, record_dir=folder, keep_recordings=keep)
    )
    asyncio.run(carrier.close())
    assert left_over.exists() is keep
