"""Recordings leave the machine that carried the call: upload, retry, retention sweep.

When a recorded call ends, the runner asks `RecordingUploader.before_finish` to
stage the upload (a durable `recording_uploads` row naming this machine and the
local file), then to push the file to the storage, all before the transaction that
ends the call and writes its webhook; that transaction also records the upload done
(`store.recordings.mark_stored`). An upload that fails, or never ran because the
process died between the call's end and the upload, stays in the outbox: this
machine's uploader loop (in `callfleet serve` and `callfleet worker` alike) retries
it with backoff until it is stored, so the file is never lost. A machine is named by
the `node-id` file in its data directory, so a restarted worker finds its own files.

Only once the storage holds the object and the database says so is the local copy
removed (and only when it is not itself the stored object: the default local
storage is the data directory, where the recording already is).

`sweep_retention` (run by the leader's reaper) deletes recordings past their
`recording_expires_at` from the storage, then marks them `expired`.

`CALLFLEET_FAULT_EXIT_BEFORE_UPLOAD=1` makes the process exit right after staging an
upload: the crash the acceptance test recovers from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import structlog

from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.dispatch.writer import GroupWriter
from callfleet.storage import Storage, StorageError, locate, recording_key
from callfleet.store import recordings
from callfleet.store.recordings import REMOVED_STATES, RecordingState

__all__ = ["RecordingUploader", "node_id", "sweep_retention"]

log = structlog.get_logger(__name__)

_BACKOFF_S = (1.0, 5.0, 15.0, 60.0, 300.0)


def node_id(data_dir: Path) -> str:
    """This machine's name for its uploads (kept in `DATA_DIR/node-id`)."""
    path = data_dir / "node-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial = path.with_suffix(f".{os.getpid()}")
        partial.write_text(name)
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)  # the first process to name the machine wins
        partial.unlink()
        return path.read_text().strip()


class RecordingUploader:
    """Uploads this machine's recordings and retries the ones left behind."""

    def __init__(self, writer: GroupWriter, storage: Storage, settings: Settings) -> None:
        self.writer = writer
        self.storage = storage
        self.settings = settings
        self.node = node_id(settings.data_dir)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def expires_at(self, ended_at: datetime, retention_days: object) -> datetime | None:
        days = retention_days if isinstance(retention_days, int) else None
        days = days or self.settings.recording_retention_days
        return ended_at + timedelta(days=days) if days else None

    async def before_finish(
        self, call_id: str, attempt: int, local: Path, expires_at: datetime | None
    ) -> tuple[str, bool]:
        """Stage and push one recording; (its key, whether the storage has it now)."""
        key = recording_key(call_id, attempt)
        node, now = self.node, utcnow()
        await self.writer.run(
            lambda conn: recordings.stage_upload(
                conn,
                call_id=call_id,
                key=key,
                node=node,
                local_path=str(local),
                expires_at=expires_at,
                now=now,
            )
        )
        if os.environ.get("CALLFLEET_FAULT_EXIT_BEFORE_UPLOAD") == "1":
            log.warning("exiting before the upload (CALLFLEET_FAULT_EXIT_BEFORE_UPLOAD)")
            os._exit(86)
        return key, await self._push(key, local, attempts=0)

    async def _push(self, key: str, local: Path, *, attempts: int) -> bool:
        try:
            await asyncio.to_thread(self.storage.put_file, key, local)
            return True
        except (StorageError, OSError) as exc:
            error = str(exc)
        delay = _BACKOFF_S[min(attempts, len(_BACKOFF_S) - 1)]
        log.warning("recording upload failed; will retry", key=key, error=error[:300])
        when = utcnow() + timedelta(seconds=delay)
        with contextlib.suppress(Exception):
            await self.writer.run(lambda conn: recordings.upload_failed(conn, key, error, when))
        return False

    async def after_commit(self, key: str, local: Path) -> None:
        """The database says `key` is stored: drop the local copy unless it is the object."""
        await asyncio.to_thread(_drop_local_copy, self.storage, key, local)

    async def retry_once(self) -> int:
        """Push this machine's due uploads; returns how many were stored."""
        node, now = self.node, utcnow()
        due = await self.writer.run(lambda conn: recordings.due_uploads(conn, node, now))
        stored = 0
        for item in due:
            local = Path(item.local_path)
            if item.call_state in REMOVED_STATES:  # deleted or erased before it got here
                await self.writer.run(partial(recordings.drop_upload, key=item.key, now=now))
                await self.after_commit(item.key, local)
                continue
            if not await asyncio.to_thread(local.is_file):
                log.error("a recording to upload is gone from this disk", path=str(local))
                await self.writer.run(
                    partial(recordings.drop_upload, key=item.key, lost=True, now=now)
                )
                continue
            if not await self._push(item.key, local, attempts=item.attempts):
                continue
            kept = await self.writer.run(
                partial(recordings.mark_stored, call_id=item.call_id, key=item.key)
            )
            if not kept:  # removed while uploading: the object must not outlive that
                await asyncio.to_thread(self.storage.delete, item.key)
            await self.after_commit(item.key, local)
            stored += 1
            log.info("recording uploaded on retry", key=item.key, attempts=item.attempts + 1)
        return stored

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="recording-uploads")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.retry_once()
            except Exception:
                log.exception("recording upload pass failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()


async def sweep_retention(writer: GroupWriter, storage: Storage, limit: int = 200) -> int:
    """Delete recordings past their retention; returns how many expired."""
    now = utcnow()
    due = await writer.run(lambda conn: recordings.expired_recordings(conn, now, limit))
    gone: list[str] = []
    for call_id, keys in due:
        try:
            for key in keys:
                await asyncio.to_thread(_delete, storage, key)
        except StorageError as exc:
            log.warning(
                "could not delete an expired recording", call_id=call_id, error=str(exc)[:300]
            )
            continue
        gone.append(call_id)
    if not gone:
        return 0
    return await writer.run(
        lambda conn: recordings.mark_removed(conn, gone, RecordingState.EXPIRED, now)
    )


def _drop_local_copy(storage: Storage, key: str, local: Path) -> None:
    stored_here = getattr(storage, "path", None)
    if stored_here is not None and Path(stored_here(key)).resolve() == local.resolve():
        return
    with contextlib.suppress(FileNotFoundError):
        local.unlink()


def _delete(storage: Storage, key: str) -> None:
    where, name = locate(storage, key)
    where.delete(name)
