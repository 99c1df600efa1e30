"""`FairPool`: a few worker threads shared by every call, served in turn.

The engines behind the calls of a process are few: two Whisper workers, two Piper
processes. When several calls want them at once, the order decides who waits. A
FIFO lets one chatty call, or a burst of lines prepared for a batch that is
dialling, sit in front of a callee who has just stopped speaking. Here:

1. **Priority first.** `NOW` (a callee or a reply is waiting on it) before `SOON`
   (speculative work that saves time if it is ready: a transcript started in a
   pause) before `LATER` (lines prepared while calls ring).
2. **Calls in turn within a priority.** Each call (any hashable key) has its own
   queue; the pool takes one job from the call at the head and sends that call to
   the back, so a call with ten jobs queued gets one served per round while the
   others get theirs in between.
3. **Speculative work never takes the last workers.** At most `soon_workers` jobs
   of `SOON` priority run at once (one, by default, of a pool of two), so a job a
   callee waits for finds a worker free and never queues behind a guess; on a busy
   machine guesses wait, and are withdrawn unused when their moment passes.
4. **A job no one waits for is never run.** `run()` withdraws its job when the
   awaiting task is cancelled before a worker took it (the speculative transcript
   of a pause the callee spoke through).

Each worker owns one resource (a Piper process, or a handle on the shared Whisper
model) and runs one job at a time on it. The pool is thread-safe and not tied to
an event loop: `submit()` returns a `concurrent.futures.Future`, `run()` awaits one.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["FairPool", "PoolClosed", "Priority"]

R = TypeVar("R")
T = TypeVar("T")


class Priority(enum.IntEnum):
    NOW = 0
    SOON = 1
    LATER = 2


class PoolClosed(RuntimeError):
    """The pool was closed: the job will not run."""


@dataclass(eq=False)
class _Job(Generic[R]):
    key: Hashable
    priority: Priority
    work: Callable[[R], object]
    future: Future[object] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class FairPool(Generic[R]):
    """One worker thread per resource; jobs by priority, then calls in turn."""

    def __init__(
        self, resources: Sequence[R], *, name: str = "pool", soon_workers: int | None = None
    ) -> None:
        if not resources:
            raise ValueError("a pool needs at least one resource")
        self.name = name
        self.soon_workers = max(1, len(resources) - 1) if soon_workers is None else soon_workers
        self._running_soon = 0
        self._queues: dict[Priority, OrderedDict[Hashable, deque[_Job[R]]]] = {
            p: OrderedDict() for p in Priority
        }
        self._cond = threading.Condition()
        self._closed = False
        self.served = dict.fromkeys(Priority, 0)
        """Jobs run, by priority."""
        self.withdrawn = 0
        """Jobs taken back before they ran (no one waited for them any more)."""
        self.longest_wait_s = dict.fromkeys(Priority, 0.0)
        """The longest a job of each priority waited for a worker."""
        self._workers = [
            threading.Thread(target=self._serve, args=(r,), name=f"{name}-{i}", daemon=True)
            for i, r in enumerate(resources)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def size(self) -> int:
        return len(self._workers)

    def pending(self, priority: Priority | None = None) -> int:
        with self._cond:
            kinds = [priority] if priority is not None else list(Priority)
            return sum(len(q) for p in kinds for q in self._queues[p].values())

    def submit(
        self, key: Hashable, work: Callable[[R], T], *, priority: Priority = Priority.NOW
    ) -> Future[T]:
        """Queue `work(resource)` for `key`'s turn; its future holds the result."""
        job: _Job[R] = _Job(key, priority, work)
        with self._cond:
            if self._closed:
                raise PoolClosed(f"the {self.name} pool is closed")
            self._queues[priority].setdefault(key, deque()).append(job)
            self._cond.notify()
        return job.future  # type: ignore[return-value]  # the job's work returns a T

    def call(
        self, key: Hashable, work: Callable[[R], T], *, priority: Priority = Priority.NOW
    ) -> T:
        """`submit` and wait for the result (blocking; not from the event loop)."""
        return self.submit(key, work, priority=priority).result()

    async def run(
        self, key: Hashable, work: Callable[[R], T], *, priority: Priority = Priority.NOW
    ) -> T:
        """`submit` and await the result; cancelling the awaiting task withdraws a job
        that has not started (one that has runs to its end, and its result is dropped)."""
        future = self.submit(key, work, priority=priority)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.withdraw(future)
            raise

    def withdraw(self, future: Future[object] | Future[T]) -> bool:
        """Take a job back if no worker has started it; True if it was."""
        with self._cond:
            for queues in self._queues.values():
                for key, jobs in queues.items():
                    for job in jobs:
                        if job.future is future:
                            jobs.remove(job)
                            if not jobs:
                                del queues[key]
                            self.withdrawn += 1
                            future.cancel()
                            return True
        return False

    def _next(self) -> _Job[R] | None:
        """The next job (lock held): the highest priority, the call at the head."""
        for priority in Priority:
            queues = self._queues[priority]
            if not queues:
                continue
            if priority is Priority.SOON and self._running_soon >= self.soon_workers:
                continue  # guesses leave the other workers to what callees wait for
            key, jobs = next(iter(queues.items()))
            job = jobs.popleft()
            del queues[key]
            if jobs:
                queues[key] = jobs  # back of the line
            return job
        return None

    def _serve(self, resource: R) -> None:
        while True:
            with self._cond:
                job = self._next()
                while job is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    job = self._next()
                waited = time.monotonic() - job.queued_at
                self._running_soon += job.priority is Priority.SOON
                self.served[job.priority] += 1
                self.longest_wait_s[job.priority] = max(self.longest_wait_s[job.priority], waited)
            try:
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = job.work(resource)
                except BaseException as exc:  # handed to whoever waits for the job
                    job.future.set_exception(exc)
                else:
                    job.future.set_result(result)
            finally:
                if job.priority is Priority.SOON:
                    with self._cond:
                        self._running_soon -= 1
                        self._cond.notify()

    def close(self, *, wait: bool = True) -> None:
        """Refuse new jobs, cancel the queued ones and let running ones finish."""
        with self._cond:
            self._closed = True
            for queues in self._queues.values():
                for jobs in queues.values():
                    for job in jobs:
                        job.future.cancel()
                queues.clear()
            self._cond.notify_all()
        if wait:
            for worker in self._workers:
                if worker is not threading.current_thread():
                    worker.join(timeout=30)
