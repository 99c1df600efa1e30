"""The engine port, and its in-process adapter (the embedded default).

An engine runs admitted calls somewhere. `enqueue` is called inside the admission
transaction (an engine whose queue lives in the same database defers its job
there, so admission and enqueue commit together); `start` is called after that
transaction commits (the in-process engine starts asyncio tasks then). Engines
deliver at least once; the claim in `run_call` makes a second delivery harmless.
The procrastinate adapter for many machines is the second implementation of this
port (see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.engine import Connection

from callfleet.dispatch.hopper import Job
from callfleet.dispatch.runner import CallRunner

__all__ = ["Engine", "InProcessEngine"]


class Engine(Protocol):
    def enqueue(self, conn: Connection, jobs: Sequence[Job]) -> None: ...

    def start(self, jobs: Sequence[Job]) -> None: ...

    def request_hangup(self, call_id: str) -> bool: ...

    async def shutdown(self, deadline_s: float) -> None: ...


class InProcessEngine:
    """Runs each admitted call as an asyncio task of this process."""

    def __init__(self, runner: CallRunner) -> None:
        self.runner = runner
        self.tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, conn: Connection, jobs: Sequence[Job]) -> None:
        return None  # nothing to write: the admitted rows are the queue

    def start(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            task = asyncio.create_task(self.runner.run_call(job.call_id, job.attempt))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def request_hangup(self, call_id: str) -> bool:
        return self.runner.request_hangup(call_id)

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
