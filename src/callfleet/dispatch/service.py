"""The dispatcher: the hopper and reaper loops around one engine and one writer.

`Dispatcher.run()` admits calls in passes (every `hopper_interval_s`, or at once
when a slot frees or a batch arrives), and reaps every second. One instance runs in
`callfleet serve`; the benchmarks and tests drive it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import UTC, datetime

import structlog
from sqlalchemy.engine import Connection

from callfleet.config import Settings
from callfleet.dispatch import hopper
from callfleet.dispatch.engine import InProcessEngine
from callfleet.dispatch.limits import TokenBuckets
from callfleet.dispatch.runner import CallRunner
from callfleet.dispatch.writer import GroupWriter
from callfleet.store.db import Database
from callfleet.telephony.carrier import Carrier

__all__ = ["Dispatcher"]

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, carrier: Carrier) -> None:
        self.db = db
        self.settings = settings
        self.carrier = carrier
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.writer = GroupWriter(db)
        self.runner = CallRunner(self.writer, carrier, settings, self.worker_id, self.wake)
        self.engine = InProcessEngine(self.runner)
        self.buckets = TokenBuckets()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        """Run the next admission pass now (a slot freed, a batch arrived)."""
        self._wake.set()

    def request_hangup(self, call_id: str) -> bool:
        return self.engine.request_hangup(call_id)

    async def start(self) -> None:
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self._hopper_loop(), name="hopper"),
            asyncio.create_task(self._reaper_loop(), name="reaper"),
        ]
        log.info("dispatcher started", worker=self.worker_id, carrier=self.carrier.describe())

    async def stop(self, deadline_s: float = 5.0) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engine.shutdown(deadline_s)
        self.writer.stop()

    async def admit_once(self) -> hopper.Admission:
        settings, buckets, engine = self.settings, self.buckets, self.engine

        def do_pass(conn: Connection) -> hopper.Admission:
            admission = hopper.admission_pass(
                conn,
                _now(),
                default_cap=settings.account_concurrency,
                default_cps=settings.default_cps,
                buckets=buckets,
            )
            engine.enqueue(conn, admission.jobs)
            return admission

        admission = await self.writer.run(do_pass)
        if admission.jobs:
            self.engine.start(admission.jobs)
        return admission

    async def reap_once(self) -> None:
        settings = self.settings
        jobs = await self.writer.run(
            lambda conn: hopper.reap(
                conn, _now(), lease_s=settings.lease_s, grace_s=settings.watchdog_grace_s
            )
        )
        if jobs:
            log.info("re-enqueued admitted calls whose job was lost", count=len(jobs))
            self.engine.start(jobs)

    async def _hopper_loop(self) -> None:
        while not self._stopping:
            try:
                admission = await self.admit_once()
            except Exception:
                log.exception("admission pass failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if admission.saturated:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.hopper_interval_s)

    async def _reaper_loop(self) -> None:
        while not self._stopping:
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper pass failed; retrying")
            await asyncio.sleep(1.0)
