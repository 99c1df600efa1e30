"""Leader election: many API processes, one hopper.

The hopper (admission and reaper passes) must run in one process at a time: its
calls-per-second buckets live in memory, and two admission passes racing on one
account's free slots would be wasted work. On PostgreSQL the leader is the process
whose dedicated connection holds a session-level advisory lock
(`pg_try_advisory_lock`). PostgreSQL releases that lock the moment the session
ends, so when a leader dies (kill -9, a lost connection, a machine gone) another
process takes the lock on its next try, within `leader_interval_s` plus the
cool-down. The leader pings its connection every interval; if the ping fails the
process stops being the leader at once, closes the connection, and waits a
cool-down before competing again, so that a healthy follower wins.

Two fences keep a stale leader harmless in the moments before it notices: every
admission pass first takes a transaction-level advisory lock (so passes of two
would-be leaders run one after the other and each sees the other's admissions),
then checks in `pg_locks` that its own session still holds the leader lock, and
admits nothing if it does not (`PgLeader.fence`).

On SQLite there is one process; it is trivially the leader (`SoloLeader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Protocol

import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

__all__ = ["LOCK_CLASS", "Leader", "NotLeaderError", "PgLeader", "SoloLeader"]

log = structlog.get_logger(__name__)

# pg_try_advisory_lock(int4, int4): pg_locks shows them as classid and objid.
LOCK_CLASS = 0x63666C74  # "cflt"
LEADER_KEY = 1
"""Held by the leader's session for as long as it leads."""
PASS_KEY = 2
"""Taken per admission transaction: serialises passes of any two would-be leaders."""


class NotLeaderError(RuntimeError):
    """Raised inside an admission transaction when this process no longer leads."""


class Leader(Protocol):
    @property
    def is_leader(self) -> bool: ...

    def fence(self, conn: Connection) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class SoloLeader:
    """The only process (SQLite, or a test): always the leader."""

    def __init__(self) -> None:
        self.identity = f"solo:{os.getpid()}"

    @property
    def is_leader(self) -> bool:
        return True

    def fence(self, conn: Connection) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class PgLeader:
    """Holds (or competes for) the hopper's advisory lock on a dedicated connection."""

    def __init__(
        self,
        conninfo: str,
        identity: str,
        *,
        interval_s: float = 0.5,
        cooldown_s: float | None = None,
        on_change: Callable[[bool], None] = lambda _leading: None,
    ) -> None:
        self.conninfo = conninfo
        self.identity = identity
        self.interval_s = interval_s
        self.cooldown_s = 3 * interval_s if cooldown_s is None else cooldown_s
        self.on_change = on_change
        self.backend_pid: int | None = None
        self._leading = False
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lost_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def start(self) -> None:
        if self._task is None:
            await self.step()  # decide at once, so a lone process leads from the start
            self._task = asyncio.create_task(self._run(), name="leader-election")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        self._set(False)
        await self._drop_connection()  # ending the session releases the lock

    def fence(self, conn: Connection) -> None:
        """Inside an admission transaction: serialise with other passes, check we lead."""
        pid = self.backend_pid
        if not self._leading or pid is None:
            raise NotLeaderError("this process is not the hopper's leader")
        holds = conn.execute(
            sa.text(
                "SELECT pg_advisory_xact_lock(CAST(:cls AS int4), CAST(:pass_key AS int4)), "
                "EXISTS (SELECT 1 FROM pg_locks "
                "WHERE locktype = 'advisory' AND classid = :cls AND objid = :key "
                "AND objsubid = 2 AND pid = :pid AND granted)"
            ),
            {"cls": LOCK_CLASS, "pass_key": PASS_KEY, "key": LEADER_KEY, "pid": pid},
        ).one()[1]
        if not holds:
            raise NotLeaderError("the leader lock's session is gone")

    async def step(self) -> None:
        """One round: ping the lock's session while leading, else try to take the lock."""
        try:
            if self._conn is None or self._conn.closed:
                if time.monotonic() - self._lost_at < self.cooldown_s:
                    return
                await self._connect()
            conn = self._conn
            assert conn is not None
            limit = max(2.0, 4 * self.interval_s)
            if self._leading:
                async with asyncio.timeout(limit):
                    await conn.execute("SELECT 1")
                return
            if time.monotonic() - self._lost_at < self.cooldown_s:
                return
            async with asyncio.timeout(limit):
                cur = await conn.execute(
                    "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (LOCK_CLASS, LEADER_KEY)
                )
                row = await cur.fetchone()
            if row is not None and row[0]:
                self._set(True)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if self._leading:
                log.warning("lost the hopper's leader lock", error=str(exc)[:200])
            self._lost_at = time.monotonic()
            self._set(False)
            await self._drop_connection()

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.interval_s)
            await self.step()

    async def _connect(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name=f"callfleet-hopper {self.identity}"[:63],
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        self.backend_pid = self._conn.info.backend_pid

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self.backend_pid = None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await conn.close()

    def _set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("this process now runs the hopper", leader=self.identity)
        else:
            log.info("this process no longer runs the hopper", leader=self.identity)
        self.on_change(leading)
