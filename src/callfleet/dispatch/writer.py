"""Group commit: many small dispatch writes share one transaction.

Claims, heartbeats and finishes are tiny conditional statements, and at a thousand
calls a second a commit each would spend the database on fsyncs (and, on SQLite,
serialise every caller on the write lock). `GroupWriter` runs them on one thread:
it takes whatever operations are waiting, runs them in a single transaction,
commits once, and hands each caller its own result. If one operation raises, the
group is rolled back and replayed with each operation in its own SAVEPOINT, so the
failure stays that operation's own: every operation behaves exactly as if it had
its own transaction; only the commit is shared. Results go back to each event loop
in one hop per group, not one per operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Connection

from callfleet.store.db import Database

__all__ = ["GroupWriter"]

T = TypeVar("T")
log = structlog.get_logger(__name__)

_STOP = object()


@dataclass
class _Op:
    fn: Callable[[Connection], Any]
    loop: asyncio.AbstractEventLoop | None
    future: Any  # asyncio.Future on `loop`, or concurrent.futures.Future without a loop
    ok: bool = False
    value: Any = None


class GroupWriter:
    """One writer thread; `await writer.run(fn)` runs `fn(conn)` in a shared transaction."""

    def __init__(self, db: Database, *, max_group: int = 500) -> None:
        self._db = db
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="callfleet-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    async def run(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(fn, loop, fut))
        return await fut

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        fut: Future[T] = Future()
        self._queue.put(_Op(fn, None, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while len(group) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[_Op]) -> None:
        try:
            with self._db.write() as conn:
                for op in group:
                    op.value, op.ok = op.fn(conn), True
        except Exception:
            for op in group:
                op.ok, op.value = False, None
            self._run_one_by_one(group)
        self._deliver(group)

    def _run_one_by_one(self, group: list[_Op]) -> None:
        try:
            with self._db.write() as conn:
                for op in group:
                    try:
                        with conn.begin_nested():
                            op.value, op.ok = op.fn(conn), True
                    except Exception as exc:
                        op.value, op.ok = exc, False
        except Exception as exc:  # the commit itself failed: nothing was written
            log.warning("group commit failed", error=str(exc), size=len(group))
            for op in group:
                op.value, op.ok = exc, False

    def _deliver(self, group: list[_Op]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
        for op in group:
            if op.loop is None:
                if op.ok:
                    op.future.set_result(op.value)
                else:
                    op.future.set_exception(op.value)
            else:
                by_loop.setdefault(op.loop, []).append(op)
        for loop, ops in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_resolve, ops)


def _resolve(ops: list[_Op]) -> None:
    for op in ops:
        if op.future.done():
            continue
        if op.ok:
            op.future.set_result(op.value)
        else:
            op.future.set_exception(op.value)
