"""Group commit: many small dispatch writes share one transaction.

Claims, heartbeats and finishes are tiny conditional statements, and at a thousand
calls a second a commit each would spend the database on fsyncs (and, on SQLite,
serialise every caller on the write lock). `GroupWriter` runs them on one thread:
it takes whatever operations are waiting, runs each inside its own SAVEPOINT of a
single transaction, commits once, and resolves each caller's future with its own
result or exception. An operation therefore behaves exactly as if it had its own
transaction; only the commit is shared.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Connection

from callfleet.store.db import Database

__all__ = ["GroupWriter"]

T = TypeVar("T")
log = structlog.get_logger(__name__)

_STOP = object()


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
        fut: Future[T] = Future()
        self._queue.put((fn, fut))
        return await asyncio.wrap_future(fut)

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        fut: Future[T] = Future()
        self._queue.put((fn, fut))
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

    def _run_group(self, group: list[Any]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            with self._db.write() as conn:
                for fn, fut in group:
                    if not fut.set_running_or_notify_cancel():
                        continue
                    try:
                        with conn.begin_nested():
                            outcomes.append((fut, True, fn(conn)))
                    except Exception as exc:  # the op's own failure; others go on
                        outcomes.append((fut, False, exc))
        except Exception as exc:  # the commit itself failed: nothing was written
            log.warning("group commit failed", error=str(exc), size=len(group))
            for _fn, fut in group:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
