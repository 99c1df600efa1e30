"""The upload outbox's branches, with the storage port's fake (`MemoryStorage`) and a
real database (SQLite and PostgreSQL): a refused upload retried with backoff, a
recording deleted before its retry, a local file that vanished."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callfleet.config import Settings
from callfleet.dispatch.uploads import RecordingUploader
from callfleet.dispatch.writer import GroupWriter
from callfleet.metrics import DatabaseCollector
from callfleet.storage.memory import MemoryStorage
from callfleet.store.accounts import create_account
from callfleet.store.db import Database
from callfleet.store.recordings import RecordingState, mark_removed, mark_stored
from callfleet.store.tables import calls, recording_uploads


def _call(db: Database) -> str:
    now = datetime.now(UTC)
    call_id = str(uuid.uuid4())
    with db.write() as conn:
        account = create_account(conn, "uploads")
        conn.execute(
            sa.insert(calls).values(
                id=call_id,
                account_id=account.id,
                to_number="+12125550101",
                task="Hi",
                params={},
                request_data={},
                state="ended",
                queue_status="complete",
                max_duration=30.0,
                record=True,
                not_before=now,
                created_at=now,
            )
        )
    return call_id


def _row(db: Database, call_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(
            sa.select(
                calls.c.recording_state, calls.c.recording_path, calls.c.recording_expires_at
            ).where(calls.c.id == call_id)
        ).one()


def _outbox(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(recording_uploads)).all())


def _upload_gauges(db: Database) -> dict[str, float]:
    """The outbox's gauges as `/metrics` shows them, parsed back."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "callfleet_recording_uploads":
                found[sample.labels["state"]] = sample.value
            elif sample.name == "callfleet_recording_upload_oldest_seconds":
                found["oldest_s"] = sample.value
    return found


def _due_now(db: Database) -> None:
    with db.write() as conn:
        conn.execute(sa.update(recording_uploads).values(next_attempt_at=datetime.now(UTC)))


def test_a_refused_upload_is_retried_then_stored(db: Database, tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = GroupWriter(db)
        writer.start()
        storage = MemoryStorage()
        storage.fail_puts = 2
        settings = Settings(data_dir=tmp_path, recording_retention_days=7)
        uploader = RecordingUploader(writer, storage, settings)
        call_id = _call(db)
        local = tmp_path / "disk" / "x.wav"
        local.parent.mkdir()
        local.write_bytes(b"RIFF-data")
        ended = datetime.now(UTC)
        expires = uploader.expires_at(ended, None)
        assert expires == ended + timedelta(days=7)
        assert uploader.expires_at(ended, 2) == ended + timedelta(days=2)
        key, stored = await uploader.before_finish(call_id, 1, local, expires)
        assert (key, stored) == (f"recordings/{call_id}-1.wav", False)
        state = _row(db, call_id)
        assert state.recording_state == RecordingState.UPLOADING
        assert abs(state.recording_expires_at - expires) < timedelta(seconds=1)
        [pending] = _outbox(db)
        assert pending.attempts == 1 and "fail_puts" in pending.last_error
        assert pending.node == uploader.node == (tmp_path / "node-id").read_text()
        gauges = _upload_gauges(db)
        assert (gauges["waiting"], gauges["failing"]) == (0.0, 1.0)
        assert gauges["oldest_s"] >= 0.0
        assert await uploader.retry_once() == 0  # not due yet: backoff
        _due_now(db)
        assert await uploader.retry_once() == 0  # refused again
        assert _outbox(db)[0].attempts == 2
        _due_now(db)
        assert await uploader.retry_once() == 1
        assert storage.objects[key] == b"RIFF-data"
        assert (_row(db, call_id).recording_state, _row(db, call_id).recording_path) == (
            RecordingState.STORED,
            key,
        )
        assert _outbox(db) == [] and not local.exists()
        assert _upload_gauges(db) == {"waiting": 0.0, "failing": 0.0, "oldest_s": 0.0}
        # A second `mark_stored` (the runner's, after a retry already stored it) is fine.
        with db.write() as conn:
            assert mark_stored(conn, call_id, key) is True
        writer.stop()

    asyncio.run(scenario())


def test_a_recording_deleted_or_lost_before_its_upload(db: Database, tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = GroupWriter(db)
        writer.start()
        storage = MemoryStorage()
        storage.fail_puts = 2
        uploader = RecordingUploader(writer, storage, Settings(data_dir=tmp_path))
        deleted, lost = _call(db), _call(db)
        files = {}
        for call_id in (deleted, lost):
            files[call_id] = tmp_path / f"{call_id}.wav"
            files[call_id].write_bytes(b"RIFF")
            await uploader.before_finish(call_id, 1, files[call_id], None)
        with db.write() as conn:
            mark_removed(conn, [deleted], RecordingState.DELETED, datetime.now(UTC))
        files[lost].unlink()
        _due_now(db)
        assert await uploader.retry_once() == 0
        assert storage.objects == {} and _outbox(db) == []
        assert not files[deleted].exists()  # the deleted recording's file went too
        assert _row(db, deleted).recording_state == RecordingState.DELETED
        assert _row(db, lost).recording_state == RecordingState.LOST
        writer.stop()

    asyncio.run(scenario())
