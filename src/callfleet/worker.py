"""`callfleet worker`: a procrastinate worker that runs admitted calls on this machine.

Start as many as you like, on any machine that reaches the PostgreSQL database;
each takes up to `--concurrency` calls at once. A job is `run_call(call_id,
attempt)`, the same `CallRunner.run_call` the embedded engine runs, with the
call's ids bound into every log line.

Shutdown (SIGTERM or SIGINT): the worker takes no new job, lets live calls go on
for `worker_shutdown_deadline_s`, then hangs up the ones still live; those end
marked "ended by the worker's shutdown" and their jobs as aborted. A second
signal hangs up at once. If stopping still takes 30 s past the deadline (the
database is unreachable, say), the process exits anyway. A worker killed outright
leaves its calls to the leader's reaper: their leases expire and they end
`interrupted` (never redialled), and jobs it had fetched but not claimed are
re-queued.

The worker rides out a database restart: it keeps its live calls, retries its
writes, and resumes fetching when PostgreSQL answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog

from callfleet.config import Settings
from callfleet.dispatch.engine import run_logged
from callfleet.dispatch.limits import max_live_calls
from callfleet.dispatch.postcall import PostcallWorker
from callfleet.dispatch.procrastinate_engine import (
    QUEUE,
    ResilientWorker,
    build_worker_app,
    ensure_schema,
    libpq_url,
    require_postgres,
    schema_present,
)
from callfleet.dispatch.runner import CallRunner
from callfleet.dispatch.uploads import RecordingUploader
from callfleet.dispatch.writer import GroupWriter
from callfleet.metrics import WorkerMetrics
from callfleet.storage import open_storage
from callfleet.store.db import Database
from callfleet.store.schema_check import migration_problem
from callfleet.telephony.carrier import CallEvents, Carrier, DialRequest, DialResult

__all__ = ["SHUTDOWN_NOTE", "CallWorker", "WorkerCarrier", "run_worker"]

log = structlog.get_logger(__name__)

SHUTDOWN_NOTE = "Ended by the worker's shutdown: the call was still live at its deadline."


class _TolerantEvents:
    """Progress reports that never fail a call: a database outage while a call is
    answered must not turn it into a failure. The state `live` is informative; the
    call's end (retried by the runner) records when it was answered anyway."""

    def __init__(self, inner: CallEvents, call_id: str) -> None:
        self.inner = inner
        self.call_id = call_id

    async def ringing(self) -> None:
        try:
            await self.inner.ringing()
        except Exception as exc:
            log.warning("could not record ringing", call_id=self.call_id, error=str(exc)[:200])

    async def answered(self) -> None:
        try:
            await self.inner.answered()
        except Exception as exc:
            log.warning("could not record the answer", call_id=self.call_id, error=str(exc)[:200])


@dataclass
class WorkerCarrier:
    """The worker's carrier: tolerant progress reports, and a note on each call that
    the worker's shutdown hung up."""

    inner: Carrier
    hung_up: set[str] = field(default_factory=set)

    def describe(self) -> str:
        return self.inner.describe()

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        result = await self.inner.place_call(request, _TolerantEvents(events, request.call_id))
        if request.call_id in self.hung_up:
            self.hung_up.discard(request.call_id)
            result.error_message = SHUTDOWN_NOTE
        return result

    async def close(self) -> None:
        await self.inner.close()


def _alembic_at_head(db: Database) -> bool:
    return migration_problem(db) is None


class CallWorker:
    """One worker process: a procrastinate worker around a `CallRunner`."""

    def __init__(
        self,
        settings: Settings,
        carrier: Carrier,
        *,
        concurrency: int | None = None,
        metrics_port: int | None = None,
        hard_stop_s: float | None = None,
        readiness: Callable[[], str | None] | None = None,
    ) -> None:
        """`readiness`: None once calls may be taken (the agent is warm), else why not;
        the worker fetches no job before."""
        require_postgres(settings)
        self.readiness = readiness
        self.hard_stop_s = hard_stop_s
        self.settings = settings
        # --concurrency, but never past this machine's live-call cap (MAX_LIVE_CALLS).
        self.concurrency = min(concurrency or settings.worker_concurrency, max_live_calls(settings))
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics_port = metrics_port
        self.carrier = WorkerCarrier(carrier)
        self.db = Database(settings.sqlalchemy_url)
        self.writer = GroupWriter(self.db)
        # Summaries of the calls that end here (and of any another process left).
        self.postcall = PostcallWorker(self.writer, settings, self.worker_id)
        self.uploads = RecordingUploader(
            self.writer, open_storage(settings.storage_location), settings
        )
        self.runner = CallRunner(
            self.writer, self.carrier, settings, self.worker_id, self.postcall.wake, self.uploads
        )
        self.metrics = WorkerMetrics(lambda: len(self.runner.live))
        self._stopping = False
        self._worker: ResilientWorker | None = None
        self._signals = 0

    def hang_up(self, call_id: str, by_user: bool) -> None:
        """A job was aborted: end its call now (BYE), marked by who asked."""
        self.metrics.aborted.inc()
        if not by_user:
            self.carrier.hung_up.add(call_id)
        if not self.runner.request_hangup(call_id, by_user=by_user):
            self.carrier.hung_up.discard(call_id)

    async def _run_call(
        self, call_id: str, attempt: int, batch_id: str | None, job_id: int | None
    ) -> None:
        self.metrics.jobs.inc()
        await run_logged(self.runner, call_id, attempt, batch_id, job_id=job_id)

    def stop(self) -> None:
        """Take no new call; live calls get the shutdown deadline (again: hang up now)."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop signal: hanging up live calls now")
            for call_id in list(self.runner.live):
                self.hang_up(call_id, by_user=False)
            return
        log.info(
            "stopping: no new calls; live calls may go on",
            live=len(self.runner.live),
            deadline_s=self.settings.worker_shutdown_deadline_s,
        )
        self._stopping = True
        if self.hard_stop_s is not None:
            asyncio.get_running_loop().call_later(self.hard_stop_s, self._hard_stop)
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]

    def _hard_stop(self) -> None:
        """The stop overran (e.g. the database is gone): exit; the reaper ends live calls."""
        log.error("shutdown overran its limit: exiting now", limit_s=self.hard_stop_s)
        sys.stdout.flush()
        os._exit(3)

    async def _wait_for_schema(self) -> None:
        said = False
        while not self._stopping:
            try:
                ok = await asyncio.to_thread(_alembic_at_head, self.db)
                if ok:
                    await asyncio.to_thread(ensure_schema, self.db)
                    with self.db.read() as conn:
                        if schema_present(conn):
                            return
            except sa.exc.SQLAlchemyError as exc:
                ok = False
                log.warning("database not reachable yet", error=str(exc)[:200])
            if not said:
                log.warning("waiting for the database schema: run `callfleet migrate`")
                said = True
            await asyncio.sleep(2.0)

    async def _wait_until_ready(self) -> None:
        """Until the carrier's talker can speak (its engines loaded and warm)."""
        said = False
        while not self._stopping and self.readiness is not None:
            waiting = self.readiness()
            if waiting is None:
                return
            if not said:
                log.info("taking no calls yet", reason=waiting)
                said = True
            await asyncio.sleep(0.1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        if self.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(self.metrics_port, registry=self.metrics.registry)
        if self.settings.engine != "procrastinate":
            log.warning(
                "CALLFLEET_ENGINE is not procrastinate: API processes run calls themselves "
                "and defer no jobs for workers; set CALLFLEET_ENGINE=procrastinate everywhere"
            )
        await self._wait_for_schema()
        await self._wait_until_ready()
        self.writer.start()
        await self.postcall.start()
        await self.uploads.start()  # this machine's recordings left behind, then new ones
        app = build_worker_app(
            libpq_url(self.settings.sqlalchemy_url),
            self._run_call,
            self.hang_up,
            pool_size=max(4, min(20, self.concurrency // 20 + 4)),
            application_name=f"callfleet-worker {self.worker_id}",
        )
        stalled = self.settings.worker_stalled_s
        log.info(
            "worker started",
            worker=self.worker_id,
            concurrency=self.concurrency,
            carrier=self.carrier.describe(),
        )
        try:
            while not self._stopping:
                try:
                    async with app.open_async():
                        self._worker = ResilientWorker(
                            app,
                            queues=[QUEUE],
                            name=self.worker_id,
                            concurrency=self.concurrency,
                            install_signal_handlers=False,
                            shutdown_graceful_timeout=self.settings.worker_shutdown_deadline_s,
                            delete_jobs="successful",
                            fetch_job_polling_interval=1.0,
                            abort_job_polling_interval=1.0,
                            update_heartbeat_interval=max(0.2, stalled / 5),
                            stalled_worker_timeout=stalled,
                        )
                        if self._stopping:
                            break
                        await self._worker.run()  # type: ignore[no-untyped-call]
                except Exception as exc:
                    if self._stopping:
                        break
                    log.warning("worker loop failed; restarting", error=str(exc)[:300])
                    await asyncio.sleep(1.0)
        finally:
            self._worker = None
            await self.postcall.stop()
            await self.uploads.stop()
            self.writer.stop()
            await self.carrier.close()
            self.db.dispose()
            log.info("worker stopped", worker=self.worker_id)


def run_worker(worker: CallWorker) -> None:
    """Entry point of `callfleet worker` (logging already configured; the worker
    built by `callfleet.wiring.build_worker`)."""
    level = logging.getLevelName(worker.settings.log_level.upper())
    quiet = max(logging.WARNING, level if isinstance(level, int) else logging.INFO)
    logging.getLogger("procrastinate").setLevel(quiet)  # one line per job is too many
    asyncio.run(worker.run())
