"""The dispatcher: the hopper and reaper loops around one engine and one writer.

`Dispatcher.run()` admits calls in passes (every `hopper_interval_s`, or at once
when a slot frees or a batch arrives), and reaps every second, but only while this
process is the hopper's leader (`leader.py`: a PostgreSQL advisory lock; on SQLite
the one process). Every API process builds one, so any of them can forward a
hangup to the engine; `callfleet serve` runs it, and the benchmarks and tests drive
it the same way.

The engine follows `CALLFLEET_ENGINE`: `inprocess` runs calls as tasks of this
process; `procrastinate` defers jobs that `callfleet worker` processes run. Either
way, admission and enqueue share one transaction, and the reaper's re-enqueues do
too. With a `readiness` check (the agent's: `wiring.py` passes it), no pass runs
while it says why calls cannot be held yet, so the first calls after start-up do
not answer into silence while the speech engines load. The post-call loop
(`postcall.py`) runs beside them in every process; a call ending here wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy.engine import Connection

from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.dispatch import hopper
from callfleet.dispatch.engine import Engine, InProcessEngine
from callfleet.dispatch.leader import Leader, NotLeaderError, PgLeader, SoloLeader
from callfleet.dispatch.limits import TokenBuckets, max_live_calls
from callfleet.dispatch.postcall import PostcallWorker
from callfleet.dispatch.reach import ReachPolicy
from callfleet.dispatch.runner import CallRunner
from callfleet.dispatch.uploads import RecordingUploader, sweep_retention
from callfleet.dispatch.writer import GroupWriter
from callfleet.metrics import DispatchMetrics
from callfleet.storage import open_storage
from callfleet.store import events, idempotency_keys
from callfleet.store.db import Database
from callfleet.telephony.carrier import Carrier

__all__ = ["Dispatcher", "make_engine"]

log = structlog.get_logger(__name__)

_READY_POLL_S = 0.1


def make_engine(settings: Settings, db: Database, runner: CallRunner) -> Engine:
    """The engine `CALLFLEET_ENGINE` names (procrastinate refuses SQLite clearly)."""
    if settings.engine == "procrastinate":
        from callfleet.dispatch.procrastinate_engine import ProcrastinateEngine

        return ProcrastinateEngine(settings, db)
    return InProcessEngine(runner)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        carrier: Carrier,
        *,
        engine: Engine | None = None,
        leader: Leader | None = None,
        readiness: Callable[[], str | None] | None = None,
    ) -> None:
        """`readiness`: None when calls may be placed, else why not (checked before
        every admission pass)."""
        self.db = db
        self.readiness = readiness
        self.settings = settings
        self.carrier = carrier
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.writer = GroupWriter(db)
        self.postcall = PostcallWorker(self.writer, settings, self.worker_id)
        self.uploads = RecordingUploader(
            self.writer, open_storage(settings.storage_location), settings
        )
        self.runner = CallRunner(
            self.writer, carrier, settings, self.worker_id, self._call_ended, self.uploads
        )
        self.engine: Engine = engine or make_engine(settings, db, self.runner)
        self.metrics = DispatchMetrics()
        if leader is None:
            if db.is_sqlite:
                leader = SoloLeader()
            else:
                from callfleet.dispatch.procrastinate_engine import libpq_url

                leader = PgLeader(
                    libpq_url(settings.sqlalchemy_url),
                    self.worker_id,
                    interval_s=settings.leader_interval_s,
                    on_change=self._leadership_changed,
                )
        self.leader: Leader = leader
        self.buckets = TokenBuckets()
        self.reach = ReachPolicy.from_settings(settings)
        # The in-process engine runs every admitted call here, so the hopper holds the
        # process cap; procrastinate workers run the calls and each caps itself.
        self.max_live: int | None = (
            max_live_calls(settings) if settings.engine == "inprocess" else None
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def not_ready(self) -> str | None:
        """Why this process places no call yet (its agent is loading), or None."""
        return self.readiness() if self.readiness is not None else None

    def wake(self) -> None:
        """Run the next admission pass now (a slot freed, a batch arrived)."""
        self._wake.set()

    def _call_ended(self) -> None:
        self.wake()
        self.postcall.wake()

    def request_hangup(self, call_id: str) -> bool:
        return self.engine.request_hangup(call_id)

    def _leadership_changed(self, leading: bool) -> None:
        self.metrics.leader.set(1.0 if leading else 0.0)
        if leading:
            self.wake()

    async def start(self) -> None:
        self.writer.start()
        await self.postcall.start()
        await self.uploads.start()
        await self.engine.open()
        await self.leader.start()
        self.metrics.leader.set(1.0 if self.leader.is_leader else 0.0)
        self._tasks = [
            asyncio.create_task(self._hopper_loop(), name="hopper"),
            asyncio.create_task(self._reaper_loop(), name="reaper"),
        ]
        log.info(
            "dispatcher started",
            worker=self.worker_id,
            engine=self.settings.engine,
            leader=self.leader.is_leader,
            carrier=self.carrier.describe(),
        )

    async def stop(self, deadline_s: float = 5.0) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=10)
            if stuck:
                log.warning("dispatcher loops did not stop in time", loops=len(stuck))
        await self.leader.close()  # hand the hopper over at once
        await self.engine.shutdown(deadline_s)
        await self.postcall.stop()
        await self.uploads.stop()
        self.writer.stop()

    async def admit_once(self) -> hopper.Admission:
        settings, buckets, engine, leader = self.settings, self.buckets, self.engine, self.leader
        max_live = self.max_live

        def do_pass(conn: Connection) -> hopper.Admission:
            leader.fence(conn)
            admission = hopper.admission_pass(
                conn,
                utcnow(),
                default_cap=settings.account_concurrency,
                default_cps=settings.default_cps,
                buckets=buckets,
                max_live=max_live,
                reach=self.reach,
            )
            engine.enqueue(conn, admission.jobs)
            return admission

        began = time.perf_counter()
        admission = await self.writer.run(do_pass)
        self.metrics.pass_seconds.observe(time.perf_counter() - began)
        if admission.jobs:
            self.metrics.admitted.inc(len(admission.jobs))
            self.engine.start(admission.jobs)
        return admission

    async def reap_once(self) -> None:
        settings, engine = self.settings, self.engine

        def do_reap(conn: Connection) -> list[hopper.Job]:
            stale = hopper.reap(
                conn, utcnow(), lease_s=settings.lease_s, grace_s=settings.watchdog_grace_s
            )
            idempotency_keys.sweep(conn, utcnow() - timedelta(hours=settings.idempotency_ttl_hours))
            events.prune_events(conn, utcnow() - timedelta(hours=settings.events_ttl_hours))
            return engine.requeue(conn, stale)

        jobs = await self.writer.run(do_reap)
        if jobs:
            log.info("re-enqueued admitted calls whose job was lost", count=len(jobs))
            self.metrics.requeued.inc(len(jobs))
            self.engine.start(jobs)
        requeued = await self.engine.reap()
        if requeued:
            self.metrics.requeued.inc(requeued)
        await sweep_retention(self.writer, self.uploads.storage)

    async def _idle(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _hopper_loop(self) -> None:
        waiting_said = False
        while not self._stopping:
            waiting = self.not_ready()
            if waiting is not None:
                if not waiting_said:
                    log.info("admitting no calls yet", reason=waiting)
                    waiting_said = True
                await asyncio.sleep(_READY_POLL_S)
                continue
            if waiting_said:
                log.info("ready: admitting calls")
                waiting_said = False
            if not self.leader.is_leader:
                await self._idle(self.settings.leader_interval_s)
                continue
            try:
                admission = await self.admit_once()
            except NotLeaderError:
                log.info("admission pass skipped: leadership lost")
                await self._idle(self.settings.leader_interval_s)
                continue
            except Exception:
                log.exception("admission pass failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if admission.saturated:
                await asyncio.sleep(0)
                continue
            await self._idle(self.settings.hopper_interval_s)

    async def _reaper_loop(self) -> None:
        while not self._stopping:
            if self.leader.is_leader:
                try:
                    await self.reap_once()
                except Exception:
                    log.exception("reaper pass failed; retrying")
            await asyncio.sleep(1.0)
