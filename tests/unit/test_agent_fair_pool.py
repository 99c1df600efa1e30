"""`FairPool`: jobs by priority, calls in turn, withdrawn jobs never run, close()."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager

import pytest

from callfleet.agent.providers.fair_pool import FairPool, PoolClosed, Priority

WAIT_S = 5.0
"""No wait in these tests is longer: a bug fails a test rather than hanging it."""


class _Resource:
    def __init__(self, label: str) -> None:
        self.label = label


def _hold(pool: FairPool[object], count: int = 1) -> tuple[threading.Event, list[Future[None]]]:
    """Keep `count` workers busy until the returned event is set; return when they are."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def block(resource: object) -> None:
        started.release()
        release.wait(WAIT_S)

    blockers = [pool.submit(("blocker", i), block) for i in range(count)]
    for _ in range(count):
        assert started.acquire(timeout=WAIT_S), "a worker never took the blocking job"
    assert pool.pending() == 0
    return release, blockers


@contextmanager
def _busy_pool(
    name: str, workers: int = 1
) -> Iterator[tuple[FairPool[object], threading.Event, list[Future[None]]]]:
    """A pool of `workers` resources, each held by a blocking job until the event is
    set; on the way out the event is set and the pool closed, whatever happened."""
    pool: FairPool[object] = FairPool([_Resource(f"r{i}") for i in range(workers)], name=name)
    release = threading.Event()
    try:
        release, blockers = _hold(pool, workers)
        yield pool, release, blockers
    finally:
        release.set()
        pool.close()


def _recorder(ran: list[str], label: str) -> Callable[[object], str]:
    def work(resource: object) -> str:
        ran.append(label)
        return label

    return work


def _results(futures: list[Future[str]]) -> list[str]:
    return [f.result(timeout=WAIT_S) for f in futures]


def test_a_pool_needs_a_resource() -> None:
    with pytest.raises(ValueError):
        FairPool([], name="empty-pool")


def test_higher_priority_jobs_run_first_whatever_the_order_they_came_in() -> None:
    with _busy_pool("priority-pool") as (pool, release, blockers):
        ran: list[str] = []
        futures = [
            pool.submit("later", _recorder(ran, "later"), priority=Priority.LATER),
            pool.submit("soon", _recorder(ran, "soon"), priority=Priority.SOON),
            pool.submit("now", _recorder(ran, "now"), priority=Priority.NOW),
        ]
        assert pool.pending() == 3
        assert pool.pending(Priority.NOW) == pool.pending(Priority.SOON) == 1
        release.set()
        assert _results(futures) == ["later", "soon", "now"]
        assert ran == ["now", "soon", "later"]
        assert pool.pending() == 0
        assert pool.served == {Priority.NOW: 2, Priority.SOON: 1, Priority.LATER: 1}
        assert pool.withdrawn == 0
        assert all(wait >= 0.0 for wait in pool.longest_wait_s.values())
        assert pool.longest_wait_s[Priority.LATER] > 0.0  # it waited for the blocker


def test_calls_take_turns_within_a_priority() -> None:
    with _busy_pool("turns-pool") as (pool, release, blockers):
        ran: list[str] = []
        futures = [pool.submit("chatty", _recorder(ran, f"chatty{i}")) for i in range(5)]
        futures += [pool.submit("a", _recorder(ran, "a")), pool.submit("b", _recorder(ran, "b"))]
        assert pool.pending() == 7
        release.set()
        _results(futures)
        assert ran == ["chatty0", "a", "b", "chatty1", "chatty2", "chatty3", "chatty4"]


def test_a_withdrawn_job_never_runs_and_a_finished_one_cannot_be_withdrawn() -> None:
    with _busy_pool("withdraw-pool") as (pool, release, blockers):
        ran: list[str] = []
        gone = pool.submit("call", _recorder(ran, "gone"))
        kept = pool.submit("call", _recorder(ran, "kept"))
        assert pool.withdraw(gone) is True
        assert gone.cancelled()
        assert pool.withdrawn == 1
        assert pool.pending() == 1
        assert pool.withdraw(gone) is False  # already taken back
        release.set()
        assert kept.result(timeout=WAIT_S) == "kept"
        assert ran == ["kept"]
        assert pool.withdraw(kept) is False  # it ran
        assert pool.withdrawn == 1
        assert pool.served[Priority.NOW] == 2  # the blocker and "kept"
        with pytest.raises(CancelledError):
            gone.result(timeout=WAIT_S)


def test_cancelling_run_while_its_job_is_queued_withdraws_the_job() -> None:
    called: list[object] = []

    def work(resource: object) -> str:
        called.append(resource)
        return "ran"

    async def main() -> None:
        waiting = asyncio.create_task(pool.run("call", work, priority=Priority.SOON))
        for _ in range(int(WAIT_S / 0.01)):  # until the task has submitted its job
            if pool.pending():
                break
            await asyncio.sleep(0.01)
        assert pool.pending(Priority.SOON) == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.pending() == 0

    with _busy_pool("run-cancel-pool") as (pool, release, blockers):
        asyncio.run(main())
        release.set()
        blockers[0].result(timeout=WAIT_S)
        # one more job behind it: once it has run, the worker has been past the withdrawn one
        assert pool.call("after", lambda resource: "after") == "after"
        assert called == []
        assert pool.withdrawn == 1
        assert pool.served[Priority.SOON] == 0


class _Boom(Exception):
    pass


def _explode(resource: object) -> str:
    raise _Boom("no voice")


def test_an_exception_in_a_job_reaches_whoever_waits_for_it() -> None:
    pool: FairPool[object] = FairPool([_Resource("r0")], name="error-pool")
    try:
        with pytest.raises(_Boom, match="no voice"):
            pool.call("call", _explode)

        async def main() -> None:
            with pytest.raises(_Boom, match="no voice"):
                await asyncio.wait_for(pool.run("call", _explode), WAIT_S)

        asyncio.run(main())
        # the worker survived both failures
        assert pool.call("call", lambda resource: "still here") == "still here"
    finally:
        pool.close()


def test_run_returns_the_result_of_the_job() -> None:
    resource = _Resource("r0")
    pool: FairPool[object] = FairPool([resource], name="run-pool")
    try:

        async def main() -> object:
            return await asyncio.wait_for(pool.run("call", lambda r: r), WAIT_S)

        assert asyncio.run(main()) is resource
    finally:
        pool.close()


def _pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def test_close_cancels_queued_jobs_refuses_new_ones_and_ends_the_workers() -> None:
    name = "close-pool"
    with _busy_pool(name, workers=2) as (pool, release, blockers):
        assert sorted(t.name for t in _pool_threads(name)) == [f"{name}-0", f"{name}-1"]
        ran: list[str] = []
        queued = [
            pool.submit("a", _recorder(ran, "a")),
            pool.submit("b", _recorder(ran, "b"), priority=Priority.LATER),
        ]
        pool.close(wait=False)
        assert all(f.cancelled() for f in queued)
        assert pool.pending() == 0
        with pytest.raises(PoolClosed):
            pool.submit("c", _recorder(ran, "c"))
        release.set()
        for blocker in blockers:  # a job already running is let finish
            assert blocker.result(timeout=WAIT_S) is None
        pool.close()
        assert _pool_threads(name) == []
        assert ran == []


def test_close_of_an_idle_pool_ends_its_workers() -> None:
    name = "idle-close-pool"
    pool: FairPool[object] = FairPool([_Resource("r0"), _Resource("r1")], name=name)
    try:
        assert pool.size == 2
        assert len(_pool_threads(name)) == 2
    finally:
        pool.close()
    assert _pool_threads(name) == []
    with pytest.raises(PoolClosed):
        pool.call("call", lambda resource: None)


def test_two_resources_run_two_jobs_side_by_side() -> None:
    resources = [_Resource("r0"), _Resource("r1")]
    pool: FairPool[_Resource] = FairPool(resources, name="side-by-side-pool")
    barrier = threading.Barrier(2)

    def meet(resource: _Resource) -> _Resource:
        barrier.wait(timeout=WAIT_S)  # BrokenBarrierError unless the other job runs too
        return resource

    try:
        futures = [pool.submit("a", meet), pool.submit("b", meet)]
        got = [f.result(timeout=WAIT_S * 2) for f in futures]
        assert all(any(r is resource for resource in resources) for r in got)
        assert got[0] is not got[1]  # one job on each worker, each with its own resource
    finally:
        barrier.abort()
        pool.close()


def test_speculative_jobs_leave_a_worker_to_what_callees_wait_for() -> None:
    """Two workers: two SOON guesses queued, only one runs; a NOW job takes the other
    worker at once instead of waiting behind the second guess."""
    pool: FairPool[object] = FairPool([object(), object()], name="soon-pool")
    release = threading.Event()
    started = threading.Semaphore(0)
    ran: list[str] = []

    def guess(resource: object) -> str:
        started.release()
        release.wait(WAIT_S)
        ran.append("guess")
        return "guess"

    try:
        assert pool.soon_workers == 1
        guesses = [pool.submit(("call", i), guess, priority=Priority.SOON) for i in range(2)]
        assert started.acquire(timeout=WAIT_S)
        assert not started.acquire(timeout=0.2), "the second guess took the last worker"
        assert pool.pending(Priority.SOON) == 1
        now = pool.submit("callee", _recorder(ran, "now"))
        assert now.result(timeout=WAIT_S) == "now"
        assert ran == ["now"]  # while the first guess still runs
        release.set()
        assert _results(guesses) == ["guess", "guess"]
    finally:
        release.set()
        pool.close()
