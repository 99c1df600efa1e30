"""The engine port, and its in-process adapter (the embedded default).

An engine runs admitted calls somewhere. `enqueue` is called inside the admission
transaction (an engine whose queue lives in the same database defers its job
there, so admission and enqueue commit together); `start` is called after that
transaction commits (the in-process engine starts asyncio tasks then). Engines
deliver at least once; the claim in `run_call` makes a second delivery harmless.
`open` runs before the first pass; on every reaper pass `requeue` (inside the
reaper's transaction) hands back admitted calls whose job was lost, and `reap` lets
an engine with its own notion of stalled jobs re-queue them; `shutdown` at the end.

Two adapters: `InProcessEngine` (here) runs calls as asyncio tasks of this
process; `ProcrastinateEngine` (`procrastinate_engine.py`) defers procrastinate
jobs that `callfleet worker` processes on any machine run. Both end in the same
`CallRunner.run_call`, wrapped by `run_logged` so every log line of a call carries
its call, attempt and batch ids.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from callfleet.dispatch.hopper import Job
from callfleet.dispatch.runner import CallRunner
from callfleet.store.tables import calls

__all__ = ["Engine", "InProcessEngine", "batch_ids", "run_logged"]


class Engine(Protocol):
    def enqueue(self, conn: Connection, jobs: Sequence[Job]) -> None: ...

    def requeue(self, conn: Connection, jobs: Sequence[Job]) -> list[Job]:
        """Enqueue again the admitted calls the reaper found waiting too long, except
        those whose job the engine still holds (queued, or running on a live worker);
        returns the ones enqueued."""
        ...

    def start(self, jobs: Sequence[Job]) -> None: ...

    def request_hangup(self, call_id: str) -> bool: ...

    async def open(self) -> None: ...

    async def reap(self) -> int: ...

    async def shutdown(self, deadline_s: float) -> None: ...


def batch_ids(conn: Connection, jobs: Sequence[Job]) -> dict[str, str | None]:
    """The batch of each job's call (for log context), in one query."""
    if not jobs:
        return {}
    found: dict[str, str | None] = {}
    ids = [job.call_id for job in jobs]
    for start in range(0, len(ids), 5000):
        rows = conn.execute(
            sa.select(calls.c.id, calls.c.batch_id).where(calls.c.id.in_(ids[start : start + 5000]))
        )
        found.update((str(call_id), batch_id) for call_id, batch_id in rows)
    return found


async def run_logged(
    runner: CallRunner, call_id: str, attempt: int, batch_id: str | None, **extra: Any
) -> None:
    """`runner.run_call` with the call's ids bound into structlog's context."""
    with structlog.contextvars.bound_contextvars(
        call_id=call_id, attempt=attempt, batch_id=batch_id, **extra
    ):
        await runner.run_call(call_id, attempt)


class InProcessEngine:
    """Runs each admitted call as an asyncio task of this process."""

    def __init__(self, runner: CallRunner) -> None:
        self.runner = runner
        self.tasks: set[asyncio.Task[None]] = set()
        self.running: set[Job] = set()
        self._batches: dict[str, str | None] = {}

    def enqueue(self, conn: Connection, jobs: Sequence[Job]) -> None:
        # Nothing to write: the admitted rows are the queue. Note the batches for logs.
        self._batches.update(batch_ids(conn, jobs))

    def requeue(self, conn: Connection, jobs: Sequence[Job]) -> list[Job]:
        lost = [job for job in jobs if job not in self.running]
        self.enqueue(conn, lost)
        return lost

    def start(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job in self.running:
                continue  # its task has not reached the claim yet
            batch_id = self._batches.pop(job.call_id, None)
            task = asyncio.create_task(run_logged(self.runner, job.call_id, job.attempt, batch_id))
            self.tasks.add(task)
            self.running.add(job)
            task.add_done_callback(self.tasks.discard)
            task.add_done_callback(functools.partial(self._done, job))

    def _done(self, job: Job, _task: asyncio.Task[None]) -> None:
        self.running.discard(job)

    def request_hangup(self, call_id: str) -> bool:
        return self.runner.request_hangup(call_id)

    async def open(self) -> None:
        return None

    async def reap(self) -> int:
        return 0

    async def shutdown(self, deadline_s: float) -> None:
        """Hang up live calls, give them `deadline_s` to end and be recorded, then cancel."""
        for call_id in list(self.runner.live):
            self.runner.request_hangup(call_id, by_user=False)
        if self.tasks:
            _done, pending = await asyncio.wait(set(self.tasks), timeout=deadline_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
