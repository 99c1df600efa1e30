"""The procrastinate adapter of the engine port: calls run by workers on many machines.

PostgreSQL only. The hopper's admission pass runs in a SQLAlchemy transaction on a
psycopg 3 connection (the `GroupWriter`'s); `ProcrastinateEngine.enqueue` defers
one procrastinate job per admitted call through that same psycopg connection,
inside a SAVEPOINT, so the admission and its jobs commit together or not at all
(procrastinate's `configure(connection=...)` route, taken here through
`JobManager.batch_defer_jobs(connection=...)`, which is what it calls, so that a
whole pass is one INSERT). A job is `run_call(call_id, attempt)` with the queueing
lock `call:<id>:<attempt>`; the claim in `CallRunner.run_call` makes any second
delivery a no-op. procrastinate's NOTIFY fires on commit, waking the workers.

`callfleet worker` (`callfleet.worker`) runs a procrastinate worker whose task is
`run_call`, built by `build_worker_app`. Cancellation of a live call: the API sets
`hangup_requested` (the runner's heartbeat sees it) and `request_hangup` also asks
procrastinate to abort the job; the worker cancels the job's task, and the task
turns that `CancelledError` into a hangup (BYE) and waits for the call's end to be
recorded before it lets the job end as aborted.

The leader's reaper calls `reap`: jobs of workers whose heartbeat stopped (kill -9,
a lost machine) are re-queued with `retry_job`, which is safe because of the
claim; stalled worker rows are pruned and old finished jobs deleted.

procrastinate's schema is its own (tables `procrastinate_*`), applied by
`ensure_schema`, never by our Alembic migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
import structlog
from procrastinate import App, JobContext, PsycopgConnector, exceptions, jobs, manager
from procrastinate.job_context import AbortReason
from procrastinate.schema import SchemaManager
from procrastinate.sync_psycopg_connector import SyncPsycopgConnector
from procrastinate.worker import Worker
from sqlalchemy.engine import Connection

from callfleet.config import Settings
from callfleet.dispatch.engine import batch_ids
from callfleet.dispatch.hopper import Job
from callfleet.dispatch.leader import LOCK_CLASS
from callfleet.store.db import Database
from callfleet.store.tables import calls

__all__ = [
    "QUEUE",
    "TASK_NAME",
    "ProcrastinateEngine",
    "ResilientWorker",
    "build_worker_app",
    "ensure_schema",
    "libpq_url",
    "queueing_lock",
    "require_postgres",
    "schema_present",
]

log = structlog.get_logger(__name__)

TASK_NAME = "callfleet.run_call"
QUEUE = "calls"
SCHEMA_KEY = 3  # advisory lock (LOCK_CLASS, 3): one process applies the schema


def libpq_url(sqlalchemy_url: str) -> str:
    """`postgresql+psycopg://...` -> `postgresql://...` (what psycopg and libpq take)."""
    url = sa.engine.make_url(sqlalchemy_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def require_postgres(settings: Settings) -> None:
    if settings.is_sqlite:
        raise RuntimeError(
            "CALLFLEET_ENGINE=procrastinate needs PostgreSQL: set CALLFLEET_DATABASE_URL="
            "postgresql://USER@HOST:PORT/DB. SQLite runs the in-process engine only "
            "(CALLFLEET_ENGINE=inprocess, the default)."
        )


def queueing_lock(call_id: str, attempt: int) -> str:
    return f"call:{call_id}:{attempt}"


def schema_present(conn: Connection) -> bool:
    found = conn.execute(sa.text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"))
    return bool(found.scalar())


def ensure_schema(db: Database) -> bool:
    """Apply procrastinate's schema unless present. True if it was applied now.

    Idempotent and safe to run from several processes at once: the check and the
    apply run under a transaction-level advisory lock, in one transaction.
    """
    if db.is_sqlite:
        raise RuntimeError("procrastinate's schema needs PostgreSQL")
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(CAST(:cls AS int4), CAST(:key AS int4))"),
            {"cls": LOCK_CLASS, "key": SCHEMA_KEY},
        )
        if schema_present(conn):
            return False
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.execute(SchemaManager.get_schema())
    log.info("applied procrastinate's schema")
    return True


def _job(job: Job, batch_id: str | None) -> jobs.Job:
    return jobs.Job(
        queue=QUEUE,
        lock=None,
        queueing_lock=queueing_lock(job.call_id, job.attempt),
        task_name=TASK_NAME,
        task_kwargs={"call_id": job.call_id, "attempt": job.attempt, "batch_id": batch_id},
    )


def _is_connection_error(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, exceptions.ConnectorException) else exc
    return isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError | OSError)


class ProcrastinateEngine:
    """The dispatcher's side: defers jobs in the admission transaction, reaps, aborts."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        reap_interval_s: float = 2.0,
        cleanup_interval_s: float = 600.0,
        keep_finished_hours: int = 24,
    ) -> None:
        require_postgres(settings)
        self.settings = settings
        self.db = db
        self.conninfo = libpq_url(settings.sqlalchemy_url)
        # Only ever used with connection=...: it never opens a pool of its own.
        self._defer = manager.JobManager(SyncPsycopgConnector())
        self.app: App | None = None
        self.reap_interval_s = reap_interval_s
        self.cleanup_interval_s = cleanup_interval_s
        self.keep_finished_hours = keep_finished_hours
        self._last_reap = float("-inf")
        self._last_cleanup = time.monotonic()
        self._aborts: set[asyncio.Task[None]] = set()

    # -- inside the admission (or reaper) transaction, on the writer thread

    def enqueue(self, conn: Connection, jobs_: Sequence[Job]) -> None:
        if not jobs_:
            return
        raw = conn.connection.driver_connection
        if not isinstance(raw, psycopg.Connection):
            raise TypeError("the procrastinate engine needs the psycopg 3 driver")
        batches = batch_ids(conn, jobs_)
        todo = [_job(job, batches.get(job.call_id)) for job in jobs_]
        try:
            # A SAVEPOINT: a failed INSERT must not abort the admission transaction.
            with conn.begin_nested():
                self._defer.batch_defer_jobs(todo, connection=raw)
            return
        except exceptions.AlreadyEnqueued:
            pass
        # Some (call, attempt) already waits in the queue (a reaper re-enqueue of a
        # call the workers have not reached yet): defer only the others.
        waiting = {
            str(lock)
            for (lock,) in conn.execute(
                sa.text(
                    "SELECT queueing_lock FROM procrastinate_jobs "
                    "WHERE status = 'todo' AND queueing_lock = ANY(:locks)"
                ),
                {"locks": [j.queueing_lock for j in todo]},
            )
        }
        for job in todo:
            if job.queueing_lock in waiting:
                continue
            with contextlib.suppress(exceptions.AlreadyEnqueued), conn.begin_nested():
                self._defer.batch_defer_jobs([job], connection=raw)

    def requeue(self, conn: Connection, jobs_: Sequence[Job]) -> list[Job]:
        if not jobs_:
            return []
        locks = [queueing_lock(job.call_id, job.attempt) for job in jobs_]
        held = {
            str(lock)
            for (lock,) in conn.execute(
                sa.text(
                    "SELECT queueing_lock FROM procrastinate_jobs "
                    "WHERE status IN ('todo', 'doing') AND queueing_lock = ANY(:locks)"
                ),
                {"locks": locks},
            )
        }
        # A job running on a dead worker comes back through `reap` (stalled jobs).
        lost = [job for job, lock in zip(jobs_, locks, strict=True) if lock not in held]
        self.enqueue(conn, lost)
        return lost

    def start(self, jobs_: Sequence[Job]) -> None:
        return None  # the jobs' NOTIFY reaches the workers when the transaction commits

    # -- on the event loop

    async def open(self) -> None:
        await asyncio.to_thread(ensure_schema, self.db)
        app = App(
            connector=PsycopgConnector(
                conninfo=self.conninfo,
                min_size=1,
                max_size=3,
                kwargs={"application_name": "callfleet-dispatch"},
            )
        )
        await app.open_async()
        self.app = app

    def request_hangup(self, call_id: str) -> bool:
        """Ask procrastinate to abort the call's running job (the worker then hangs up)."""
        if self.app is None:
            return False
        task = asyncio.get_running_loop().create_task(self._abort(call_id))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)
        return True

    async def _abort(self, call_id: str) -> None:
        assert self.app is not None
        try:
            attempt = await asyncio.to_thread(self._attempt_of, call_id)
            if attempt is None:
                return
            found = await self.app.job_manager.list_jobs_async(
                task=TASK_NAME, status="doing", queueing_lock=queueing_lock(call_id, attempt)
            )
            for job in found:
                assert job.id is not None
                await self.app.job_manager.cancel_job_by_id_async(job.id, abort=True)
                log.info("asked the worker to abort the call's job", call_id=call_id, job=job.id)
        except Exception:
            log.exception("abort request failed; the heartbeat will hang up", call_id=call_id)

    def _attempt_of(self, call_id: str) -> int | None:
        with self.db.read() as conn:
            found = conn.execute(sa.select(calls.c.attempt).where(calls.c.id == call_id)).scalar()
        return None if found is None else int(found)

    async def reap(self) -> int:
        """Re-queue the jobs of dead workers (their claim makes this safe); housekeeping."""
        now = time.monotonic()
        if self.app is None or now - self._last_reap < self.reap_interval_s:
            return 0
        self._last_reap = now
        jm = self.app.job_manager
        stalled_s = self.settings.worker_stalled_s
        pruned = await jm.prune_stalled_workers(stalled_s)
        if pruned:
            log.warning("pruned workers whose heartbeat stopped", workers=pruned)
        count = 0
        for job in await jm.get_stalled_jobs(
            task_name=TASK_NAME, seconds_since_heartbeat=stalled_s
        ):
            with contextlib.suppress(exceptions.ConnectorException):
                await jm.retry_job(job)
                count += 1
        if count:
            log.warning("re-queued the jobs of stopped workers", count=count)
        if now - self._last_cleanup >= self.cleanup_interval_s:
            self._last_cleanup = now
            await jm.delete_old_jobs(
                nb_hours=self.keep_finished_hours,
                include_failed=True,
                include_cancelled=True,
                include_aborted=True,
            )
        return count

    async def shutdown(self, deadline_s: float) -> None:
        for task in list(self._aborts):
            task.cancel()
        if self._aborts:
            await asyncio.wait(set(self._aborts), timeout=2)
        if self.app is not None:
            app, self.app = self.app, None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await app.close_async()


# --------------------------------------------------------------------------- workers

RunCall = Callable[[str, int, str | None, int | None], Coroutine[Any, Any, None]]
OnAbort = Callable[[str, bool], None]


def build_worker_app(
    conninfo: str,
    run_call: RunCall,
    on_abort: OnAbort,
    *,
    pool_size: int = 10,
    hangup_grace_s: float = 15.0,
    application_name: str = "callfleet-worker",
) -> App:
    """A procrastinate app whose one task runs `run_call(call_id, attempt, batch_id, job)`.

    When procrastinate cancels the task (an abort requested through the API, or the
    worker's shutdown deadline), `on_abort(call_id, by_user)` hangs the call up and
    the task waits up to `hangup_grace_s` for the call's end to be recorded.
    """
    app = App(
        connector=PsycopgConnector(
            conninfo=conninfo,
            min_size=2,
            max_size=pool_size,
            kwargs={"application_name": application_name[:63]},
        )
    )

    async def run_call_job(
        context: JobContext, call_id: str, attempt: int, batch_id: str | None = None
    ) -> None:
        inner = asyncio.create_task(run_call(call_id, attempt, batch_id, context.job.id))
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            by_user = context.abort_reason() == AbortReason.USER_REQUEST
            log.info("job aborted: hanging up", call_id=call_id, by_user=by_user)
            on_abort(call_id, by_user)
            done, _ = await asyncio.wait({inner}, timeout=hangup_grace_s)
            if not done:  # the carrier did not end the call: give up on it
                inner.cancel()
                await asyncio.wait({inner}, timeout=5)
            raise

    app.task(name=TASK_NAME, queue=QUEUE, pass_context=True)(run_call_job)
    return app


class ResilientWorker(Worker):
    """procrastinate's worker, made to ride out a database restart.

    Stock 3.10 stops the whole worker when a side task (heartbeat, NOTIFY listener)
    hits a connection error, and a failed `fetch_job` or `finish_job` propagates.
    Here each of those retries instead: running calls go on (the call's own writes
    retry through SQLAlchemy's pre-ping pool), fetching resumes when the database
    answers, and a worker whose row was pruned while it was cut off registers again.
    These override methods of the pinned procrastinate 3.10.0.
    """

    retry_s = 1.0
    persist_tries = 30

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        side = [
            asyncio.create_task(self._update_heartbeat(), name="update_heartbeats"),
            asyncio.create_task(
                self._periodic_deferrer(),  # type: ignore[no-untyped-call]
                name="deferrer",
            ),
            asyncio.create_task(
                self._poll_jobs_to_abort(),  # type: ignore[no-untyped-call]
                name="poll_jobs_to_abort",
            ),
        ]
        if self.listen_notify:
            side.append(asyncio.create_task(self._listen_forever(), name="listener"))
        return side

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self.app.job_manager.listen_for_jobs(
                    on_notification=self._handle_notification, queues=self.queues
                )
            except Exception as exc:
                log.warning("job notifications lost; reconnecting", error=str(exc)[:200])
            await asyncio.sleep(self.retry_s)
            self._new_job_event.set()  # look for jobs deferred while we were not listening

    async def _update_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.update_heartbeat_interval)
            try:
                rows = await self.app.connector.execute_query_all_async(
                    query="UPDATE procrastinate_workers SET last_heartbeat = NOW() "
                    "WHERE id = %(worker_id)s RETURNING id",
                    worker_id=self.worker_id,
                )
                if not rows:
                    self.worker_id = await self.app.job_manager.register_worker()
                    log.warning("worker row was pruned; registered again", worker=self.worker_id)
            except Exception as exc:
                log.warning("worker heartbeat failed; will retry", error=str(exc)[:200])

    async def _fetch_and_process_jobs(self) -> None:
        try:
            await super()._fetch_and_process_jobs()  # type: ignore[no-untyped-call]
        except exceptions.ConnectorException as exc:
            log.warning("fetching jobs failed; will retry", error=str(exc.__cause__ or exc)[:200])
            if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                with contextlib.suppress(Exception):
                    self.worker_id = await self.app.job_manager.register_worker()
            await asyncio.sleep(self.retry_s)
            self._new_job_event.set()

    async def _persist_job_status(self, *args: Any, **kwargs: Any) -> None:
        for attempt in range(self.persist_tries):
            try:
                await super()._persist_job_status(*args, **kwargs)
                return
            except exceptions.ConnectorException as exc:
                if not _is_connection_error(exc) or attempt + 1 == self.persist_tries:
                    # e.g. the reaper re-queued this job meanwhile: nothing to record.
                    log.warning("could not record the job's end", error=str(exc.__cause__)[:200])
                    return
                await asyncio.sleep(self.retry_s)
