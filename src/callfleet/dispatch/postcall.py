"""Post-call work: the summary, analysis and disposition of answered calls, after they end.

`lifecycle.finish` leaves an answered call with a spoken transcript in
`postcall_state = 'pending'` when its process has an LLM, due at once, and holds back
its webhook and its batch countdown. `PostcallWorker` runs in every process that runs
calls (the `Dispatcher` of `callfleet serve`, and `callfleet worker`): it claims due
rows with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so processes do not queue
behind each other), asks the LLM for all three results in one request (with a timeout
and bounded retries), and records them in one transaction with the call's webhook and
its batch countdown (`lifecycle.settle_call`). That write is conditional on the lease
still being this process's, so the results, the webhook and the batch's completion are
recorded exactly once.

States: NULL (nothing to do), `pending`, `done`, `failed`. A process that dies with
work in hand leaves the row `pending` with a lease that expires; another process, or
the restarted one, takes it then (a clean stop hands its rows back at once). When the
LLM fails after the retries the call is `failed`: summary, analysis and disposition
stay null, a `robot` transcript turn says why, and the webhook is sent all the same.
A DO_NOT_CONTACT disposition is an opt-out: in the same transaction the number joins
the account's do-not-call list and its queued calls are canceled
(`lifecycle.record_opt_out`), before the webhook is written.
A row still pending `give_up_after_s` after the call ended is failed the same way
without asking the LLM again; a process without an LLM does only that, so no call
waits for ever for a summary (or its batch for completion).

The lease lives in the call's `lease_owner` and `lease_until`, unused once a call has
ended: the `(state, lease_until)` index then holds exactly the post-call rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from callfleet.agent.analysis import (
    AnalysisUnavailable,
    LlmError,
    PostcallRequest,
    PostcallResult,
    summarize_call,
)
from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.dispatch import lifecycle
from callfleet.dispatch.writer import GroupWriter
from callfleet.domain.states import CallState, PostcallState
from callfleet.store.batches import expand_stored_call
from callfleet.store.tables import calls, transcript_turns

__all__ = [
    "FAILURE_PREFIX",
    "PendingCall",
    "PostcallOptions",
    "PostcallWorker",
    "claim_due",
    "record_result",
    "release",
]

DO_NOT_CONTACT = "DO_NOT_CONTACT"
"""The disposition that puts the number on the do-not-call list."""

log = structlog.get_logger(__name__)

FAILURE_PREFIX = "Post-call summary and analysis failed: "
"""The `robot` transcript turn of a call whose post-call work failed starts so."""


@dataclass(frozen=True)
class PostcallOptions:
    """How the post-call worker paces itself; the defaults suit a cloud LLM."""

    concurrency: int = 4
    """LLM requests in flight per process."""
    lease_s: float = 180.0
    """How long a claimed row is this process's; past it another process takes it."""
    poll_interval_s: float = 5.0
    """How often to look for rows other processes left (a finish here wakes it at once)."""
    give_up_after_s: float = 1800.0
    llm_timeout_s: float = 30.0
    llm_attempts: int = 3
    llm_backoff_s: tuple[float, ...] = (1.0, 4.0)

    def __post_init__(self) -> None:
        worst = self.llm_timeout_s * self.llm_attempts + sum(self.llm_backoff_s)
        if self.lease_s <= worst:
            raise ValueError(f"lease_s must exceed the worst LLM time ({worst:g} s)")


@dataclass(frozen=True)
class PendingCall:
    """A claimed call and what its post-call work needs."""

    call_id: str
    batch_id: str | None
    webhook: str | None
    ended_at: datetime | None
    request: PostcallRequest


def claim_due(
    conn: Connection,
    worker: str,
    now: datetime,
    *,
    lease_s: float,
    limit: int,
    ended_before: datetime | None = None,
) -> list[PendingCall]:
    """Lease up to `limit` due pending rows to `worker` (only calls that ended before
    `ended_before`, when given) and load their transcripts."""
    query = (
        sa.select(calls.c.id)
        .where(
            calls.c.state == CallState.ENDED,
            calls.c.lease_until <= now,
            calls.c.postcall_state == PostcallState.PENDING,
        )
        .order_by(calls.c.lease_until)
        .limit(limit)
    )
    if ended_before is not None:
        query = query.where(calls.c.ended_at < ended_before)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(conn.execute(query).scalars())
    if not ids:
        return []
    rows = conn.execute(
        sa.update(calls)
        .where(
            calls.c.id.in_(ids),
            calls.c.postcall_state == PostcallState.PENDING,
            calls.c.lease_until <= now,
        )
        .values(lease_owner=worker, lease_until=now + timedelta(seconds=lease_s))
        .returning(
            calls.c.id,
            calls.c.batch_id,
            calls.c.webhook,
            calls.c.task,
            calls.c.params,
            calls.c.request_data,
            calls.c.ended_at,
        )
    ).all()
    lines: dict[str, list[str]] = {}
    for call_id, user, text in conn.execute(
        sa.select(transcript_turns.c.call_id, transcript_turns.c.user, transcript_turns.c.text)
        .where(transcript_turns.c.call_id.in_([r.id for r in rows]))
        .order_by(transcript_turns.c.id)
    ):
        lines.setdefault(call_id, []).append(f"{user}: {text}")
    return [
        PendingCall(
            call_id=r.id,
            batch_id=r.batch_id,
            webhook=r.webhook,
            ended_at=r.ended_at,
            request=PostcallRequest.from_params(params, task, "\n".join(lines.get(r.id, ()))),
        )
        for r in rows
        # A batch call's shared fields are stored once on its batch: merge them back.
        for task, params, _vars in [
            expand_stored_call(conn, r.batch_id, r.task, r.params, r.request_data)
        ]
    ]


def record_result(
    conn: Connection,
    call: PendingCall,
    worker: str,
    now: datetime,
    result: PostcallResult | None,
    error: str | None = None,
) -> bool:
    """Record the work (`result`) or its failure (`error`), then settle the call: its
    webhook and its batch countdown. False: the lease was lost, nothing recorded."""
    values: dict[str, Any] = {
        "postcall_state": PostcallState.FAILED if result is None else PostcallState.DONE,
        "lease_owner": None,
        "lease_until": None,
    }
    if result is not None:
        values.update(
            summary=result.summary,
            analysis=sa.null() if result.analysis is None else result.analysis,
            disposition_tag=result.disposition_tag,
        )
    res = conn.execute(
        sa.update(calls)
        .where(
            calls.c.id == call.call_id,
            calls.c.lease_owner == worker,
            calls.c.postcall_state == PostcallState.PENDING,
        )
        .values(**values)
        .returning(calls.c.account_id, calls.c.to_number)
    )
    updated = res.first()
    if updated is None:
        return False
    if result is not None and result.disposition_tag == DO_NOT_CONTACT:
        lifecycle.record_opt_out(
            conn, updated.account_id, call.call_id, updated.to_number, now, source="disposition"
        )
    if result is None:
        conn.execute(
            sa.insert(transcript_turns).values(
                call_id=call.call_id,
                user="robot",
                text=FAILURE_PREFIX + (error or "unknown error"),
                created_at=now,
            )
        )
    lifecycle.settle_call(conn, call.call_id, call.batch_id, call.webhook, now)
    return True


def release(conn: Connection, worker: str, now: datetime) -> int:
    """Hand every row this worker holds back (due now), e.g. when it stops."""
    res = conn.execute(
        sa.update(calls)
        .where(
            calls.c.state == CallState.ENDED,
            calls.c.lease_until.is_not(None),  # through the (state, lease_until) index
            calls.c.lease_owner == worker,
            calls.c.postcall_state == PostcallState.PENDING,
        )
        .values(lease_owner=None, lease_until=now)
    )
    return int(res.rowcount)


class PostcallWorker:
    """The post-call loop of one process; `wake()` after a call ends looks at once."""

    def __init__(
        self,
        writer: GroupWriter,
        settings: Settings,
        worker_id: str,
        options: PostcallOptions | None = None,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.worker_id = worker_id
        self.options = options or PostcallOptions()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._held: dict[str, asyncio.Task[None]] = {}

    @property
    def has_llm(self) -> bool:
        return bool(self.settings.llm_base_url)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._client = httpx.AsyncClient()
        self._task = asyncio.create_task(self._loop(), name="postcall")

    async def stop(self) -> None:
        """Stop; work in hand is abandoned and its rows handed back for another process."""
        worker = self.worker_id
        tasks = [t for t in (self._task, *self._held.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._held.clear()
        if self._task is not None:
            # Also rows a claim cancelled mid-flight committed without our knowing.
            try:
                async with asyncio.timeout(5):
                    await self.writer.run(lambda conn: release(conn, worker, utcnow()))
            except Exception:
                log.warning("could not hand post-call work back; its lease will expire")
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def claim(self, limit: int) -> list[PendingCall]:
        options, worker, now = self.options, self.worker_id, utcnow()
        # Without an LLM this process only gives up on rows nobody has finished in time.
        stale = now - timedelta(seconds=options.give_up_after_s)
        ended_before = None if self.has_llm else stale

        def do_claim(conn: Connection) -> list[PendingCall]:
            return claim_due(
                conn,
                worker,
                now,
                lease_s=options.lease_s,
                limit=limit,
                ended_before=ended_before,
            )

        return await self.writer.run(do_claim)

    async def _loop(self) -> None:
        while True:
            free = self.options.concurrency - len(self._held)
            claimed: list[PendingCall] = []
            if free > 0:
                try:
                    claimed = await self.claim(free)
                except Exception:
                    log.exception("post-call claim failed; retrying")
                for call in claimed:
                    task = asyncio.create_task(self._work(call), name=f"postcall {call.call_id}")
                    self._held[call.call_id] = task
            if claimed and len(claimed) == free:
                continue  # there may be more due right now
            self._wake.clear()
            # asyncio.wait, unlike wait_for on 3.11, never swallows our cancellation.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.options.poll_interval_s)
            finally:
                waiter.cancel()

    async def _work(self, call: PendingCall) -> None:
        try:
            result, error = await self._produce(call)
            await self._record(call, result, error)
        finally:
            self._held.pop(call.call_id, None)
            self.wake()  # a slot is free

    async def _produce(self, call: PendingCall) -> tuple[PostcallResult | None, str | None]:
        options = self.options
        late = timedelta(seconds=options.give_up_after_s)
        if call.ended_at is not None and utcnow() - call.ended_at > late:
            minutes = options.give_up_after_s / 60
            return None, f"it did not finish within {minutes:g} minutes of the call's end."
        try:
            result = await summarize_call(
                self.settings,
                call.request,
                client=self._client,
                timeout_s=options.llm_timeout_s,
                attempts=options.llm_attempts,
                backoff_s=options.llm_backoff_s,
            )
        except (LlmError, AnalysisUnavailable) as exc:
            log.warning("post-call work failed", call_id=call.call_id, error=str(exc)[:300])
            return None, str(exc)
        except Exception as exc:
            log.exception("post-call work failed", call_id=call.call_id)
            return None, f"unexpected error: {exc}"
        return result, None

    async def _record(
        self, call: PendingCall, result: PostcallResult | None, error: str | None
    ) -> None:
        worker = self.worker_id
        for delay in (0.0, 0.5, 2.0, 5.0):
            await asyncio.sleep(delay)
            try:
                recorded = await self.writer.run(
                    lambda conn: record_result(conn, call, worker, utcnow(), result, error)
                )
            except Exception:
                log.exception("recording post-call work failed; retrying", call_id=call.call_id)
                continue
            if not recorded:
                log.warning(
                    "post-call lease lost; another process records it", call_id=call.call_id
                )
            return
        log.error("could not record post-call work; its lease will expire", call_id=call.call_id)
