"""The hopper: admission of queued calls, one transaction per pass.

A call is admitted only when its account has a free slot (calls admitted, dialling
or live count against the account's cap), the process has a free slot (the same
count over all accounts, against `CALLFLEET_MAX_LIVE_CALLS`), its caller ID has a calls-per-second
token, its `not_before` has come (start_time and the next opening of the callee's
calling window), the window is still open now in every zone the callee may be
in and within the operator's calling hours, the callee's number is under its
daily cap, its caller ID is not paused (a `pool:NAME` caller ID becomes the pool's
nearest usable number here, see `dispatch.reach`), and its batch (if any) is not
paused. A call held by the cap or a paused caller ID gets its `not_before` moved
and a `waiting_reason` saying why. Admission flips the call to
`admitted` and hands it to the engine in the same transaction. The reaper
(`reap`) turns expired leases into terminal `interrupted` failures, forces calls
past their watchdog deadline to end, and re-enqueues admitted calls whose job was
lost; it never re-dials an attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.dispatch import lifecycle
from callfleet.dispatch.limits import TokenBuckets
from callfleet.dispatch.reach import PAUSED_RECHECK, PassReach, ReachPolicy
from callfleet.dispatch.routing import Routes, load_routes
from callfleet.domain.pools import rank_pool
from callfleet.domain.states import (
    DIALLED_STATES,
    BatchStatus,
    CallMoves,
    CallState,
    QueueStatus,
)
from callfleet.store.numbers import PAUSED_REASON, POOL_PREFIX
from callfleet.store.tables import accounts, batches, calls, numbers
from callfleet.telephony.carrier import DialResult, Outcome

__all__ = ["Admission", "Job", "admission_pass", "reap"]


_IN_PAUSED_BATCH = (
    sa.exists()
    .where(batches.c.id == calls.c.batch_id, batches.c.status == BatchStatus.PAUSED)
    .correlate(calls)
)
"""A call whose batch is paused: the hopper admits none (they stay queued)."""


_ADMIT = (
    sa.update(calls)
    .where(
        calls.c.id.in_(sa.bindparam("b_ids", expanding=True)),
        lifecycle.may_make(CallMoves.ADMIT),
        # Checked again here: a pause committed since the pass read its due calls wins.
        ~_IN_PAUSED_BATCH,
    )
    .values(
        state=CallMoves.ADMIT.target,
        queue_status=QueueStatus.ALLOCATED,
        admitted_at=sa.bindparam("b_now"),
        waiting_reason=None,
    )
    .returning(calls.c.id, calls.c.attempt)
)
_SET_FROM = (
    sa.update(calls)
    .where(calls.c.id == sa.bindparam("b_id"), calls.c.state == CallState.QUEUED)
    .values(from_number=sa.bindparam("b_from"))
)
_USED = (
    sa.update(numbers)
    .where(
        numbers.c.account_id == sa.bindparam("b_account"),
        numbers.c.phone_number == sa.bindparam("b_number"),
    )
    .values(last_used_at=sa.bindparam("b_now"))
)
_HOLD = (
    sa.update(calls)
    .where(calls.c.id == sa.bindparam("b_id"), calls.c.state == CallState.QUEUED)
    .values(not_before=sa.bindparam("b_until"), waiting_reason=sa.bindparam("b_reason"))
)

_USABLE_CALLER = (
    sa.exists()
    .where(
        numbers.c.account_id == calls.c.account_id,
        numbers.c.paused_at.is_(None),
        sa.or_(
            numbers.c.phone_number == sa.bindparam("b_number"),
            numbers.c.pool == sa.bindparam("b_pool"),
        ),
    )
    .correlate(calls)
)
_HOLD_PAUSED = _HOLD.where(~_USABLE_CALLER)
"""Hold a call for its paused caller ID, unless a resume committed since the pass
read the numbers: then the call stays due and the next pass dials it."""


@dataclass(frozen=True)
class _Taken:
    call_id: str
    account_id: str
    from_number: str | None
    pooled: bool
    """`from_number` was chosen from a pool: the call's row must say which."""


@dataclass(frozen=True)
class Job:
    call_id: str
    attempt: int


@dataclass
class Admission:
    jobs: list[Job]
    saturated: bool
    """True if some account still had due calls and free slots but the pass stopped
    on its per-pass limit: run the next pass at once."""


def _active_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        sa.select(calls.c.account_id, sa.func.count())
        .where(calls.c.state.in_(lifecycle.ACTIVE_STATES))
        .group_by(calls.c.account_id)
    )
    return {str(account_id): int(n) for account_id, n in rows}  # noqa: C416 - typed copy


@dataclass
class _Queue:
    """One account's due calls in this pass, and what it has been given so far."""

    account_id: str
    active: int
    rows: list[sa.Row[Any]]
    more: bool
    """The account has more due calls than were read for this pass."""
    next: int = 0
    exhausted: set[str] = field(default_factory=set)

    def take(self, conn: Connection, now: datetime, pacer: _Pacer) -> _Taken | None:
        """This account's next call that may start now, or None."""
        reach = pacer.reach
        while self.next < len(self.rows):
            row = self.rows[self.next]
            self.next += 1
            rules = reach.rules(row)
            if not reach.is_open(rules):
                _hold(conn, row.id, reach.next_open(rules), None)
                continue
            # A rehearsal rings a simulator persona, not the row's callee: no cap.
            until = (
                reach.capped_until(self.account_id, row.to_number)
                if row.rehearsal_of is None
                else None
            )
            if until is not None:
                _hold(conn, row.id, until, _capped(row.to_number, pacer, until))
                continue
            ready, caller = self._caller(conn, row, now, pacer)
            if not ready:
                continue
            reach.record_dial(self.account_id, row.to_number, caller)
            pooled = (row.from_number or "").startswith(POOL_PREFIX)
            return _Taken(str(row.id), self.account_id, caller, pooled)
        return None

    def _caller(
        self, conn: Connection, row: Any, now: datetime, pacer: _Pacer
    ) -> tuple[bool, str | None]:
        """Whether the call may go now, and from which caller ID (None: the default).

        A call that may not go waits for a token, or is held while its caller ID (or
        every number of its pool) is paused."""
        wanted: str | None = row.from_number
        candidates: list[str | None] = [wanted]
        if wanted is not None and wanted.startswith(POOL_PREFIX):
            members = pacer.routes.pool_members(self.account_id, wanted[len(POOL_PREFIX) :])
            candidates = list(rank_pool(row.to_number, members))
        unpaused = False
        for caller in candidates:
            if caller is not None and pacer.reach.paused(conn, self.account_id, caller):
                continue
            unpaused = True
            bucket, rate = pacer.routes.pacing(
                self.account_id,
                caller,
                pacer.default_cps,
                builtin=row.rehearsal_of is not None,
            )
            if bucket in self.exhausted:
                continue
            if not pacer.buckets.take(bucket, rate, pacer.mono):
                self.exhausted.add(bucket)
                continue
            return True, caller
        if not unpaused:
            conn.execute(
                _HOLD_PAUSED,
                {
                    "b_id": row.id,
                    "b_until": now + PAUSED_RECHECK,
                    "b_reason": _paused(wanted),
                    "b_number": wanted,
                    "b_pool": _pool_of(wanted) or "",
                },
            )
        return False, None


def _pool_of(wanted: str | None) -> str | None:
    if wanted is not None and wanted.startswith(POOL_PREFIX):
        return wanted[len(POOL_PREFIX) :]
    return None


def _hold(conn: Connection, call_id: str, until: datetime, reason: str | None) -> None:
    conn.execute(_HOLD, {"b_id": call_id, "b_until": until, "b_reason": reason})


def _capped(to_number: str, pacer: _Pacer, until: datetime) -> str:
    cap = pacer.reach.policy.daily_cap
    return (
        f"number_daily_cap: {to_number} was dialled {cap} times in the last 24 hours "
        f"(CALLFLEET_NUMBER_DAILY_CAP={cap}); the call waits until {until.isoformat()}"
    )


def _paused(wanted: str | None) -> str:
    if wanted is not None and wanted.startswith(POOL_PREFIX):
        return (
            f"{PAUSED_REASON} every number of pool {wanted[len(POOL_PREFIX) :]!r} is paused; "
            "the call waits until one is resumed (POST /v1/numbers/{n}/resume) or added"
        )
    return (
        f"{PAUSED_REASON} {wanted} is paused for its low answer rate; the call waits "
        f"until it is resumed (POST /v1/numbers/{wanted}/resume)"
    )


@dataclass(frozen=True)
class _Pacer:
    routes: Routes
    buckets: TokenBuckets
    default_cps: float
    mono: float
    reach: PassReach


def _due_queues(
    conn: Connection,
    active: dict[str, int],
    default_cap: int,
    budget: int,
    now: datetime,
    reach: PassReach,
) -> list[_Queue]:
    """Each account with a free slot and due calls, with up to `budget` of them read."""
    caps = conn.execute(sa.select(accounts.c.id, accounts.c.concurrency_cap)).all()
    queues: list[_Queue] = []
    for account_id, cap in caps:
        free = (cap or default_cap) - active.get(account_id, 0)
        if free <= 0:
            continue
        limit = min(free, budget)
        rows = conn.execute(
            sa.select(
                calls.c.id,
                calls.c.attempt,
                calls.c.to_number,
                calls.c.from_number,
                calls.c.window,
                calls.c.callee_tz,
                calls.c.not_before,
                calls.c.rehearsal_of,
            )
            .where(
                calls.c.account_id == account_id,
                calls.c.state == CallState.QUEUED,
                calls.c.not_before <= now,
                ~_IN_PAUSED_BATCH,
            )
            .order_by(calls.c.not_before, calls.c.seq)
            .limit(limit)
        ).all()
        if rows:
            reach.count_dials(conn, account_id, list(rows))
            more = len(rows) == limit and limit < free
            queues.append(_Queue(account_id, active.get(account_id, 0), list(rows), more))
    # Fewest live calls first, then the oldest due call: a freed slot goes to the
    # account that has least, and a lone call is never behind another's backlog.
    queues.sort(key=lambda q: (q.active, q.rows[0].not_before, q.account_id))
    return queues


def _round_robin(
    conn: Connection, queues: list[_Queue], budget: int, pacer: _Pacer, now: datetime
) -> list[_Taken]:
    """Up to `budget` calls, one per account per round, in the order given out."""
    chosen: list[_Taken] = []
    turn = list(queues)
    while turn and len(chosen) < budget:
        still: list[_Queue] = []
        for queue in turn:
            if len(chosen) >= budget:
                break
            taken = queue.take(conn, now, pacer)
            if taken is None:
                continue
            chosen.append(taken)
            still.append(queue)
        turn = still
    return chosen


def admission_pass(
    conn: Connection,
    now: datetime,
    *,
    default_cap: int,
    default_cps: float,
    buckets: TokenBuckets,
    max_per_pass: int = 2000,
    max_live: int | None = None,
    reach: ReachPolicy | None = None,
) -> Admission:
    """Admit due calls, sharing the pass fairly between accounts.

    Round-robin, one call per account per round, accounts ordered by fewest live
    calls and then by their oldest due call: each account within its own cap and
    its trunks' pacing, all of them within `max_per_pass` and `max_live` (the calls
    active over all accounts; None: no cap), and `reach`'s hours, daily cap and
    caller-ID health (None: `ReachPolicy.off()`). Cost: two queries per account with
    a free slot (its due calls, its callees' dials), and one per caller ID whose
    health is due; the rounds are in memory.
    """
    active = _active_counts(conn)
    budget = max_per_pass
    if max_live is not None:
        # Calls over the process cap stay queued (never failed) until a slot frees.
        budget = min(budget, max_live - sum(active.values()))
        if budget <= 0:
            return Admission([], saturated=False)
    routes = load_routes(conn)
    pass_reach = PassReach(reach or ReachPolicy.off(), routes, now)
    queues = _due_queues(conn, active, default_cap, budget, now, pass_reach)
    pacer = _Pacer(routes, buckets, default_cps, time.monotonic(), pass_reach)
    chosen = _round_robin(conn, queues, budget, pacer, now)
    jobs: list[Job] = []
    if chosen:
        _record_callers(conn, chosen, now)
        # The engine starts jobs in this order: the round-robin's, not the table's.
        rank = {taken.call_id: i for i, taken in enumerate(chosen)}
        admitted = conn.execute(_ADMIT, {"b_ids": list(rank), "b_now": now}).all()
        jobs = [Job(r.id, r.attempt) for r in sorted(admitted, key=lambda r: rank[r.id])]
    # Run again at once only when the per-pass limit, not the live cap, stopped us.
    per_pass_bound = budget == max_per_pass
    pending = any(q.more and not q.exhausted for q in queues)
    return Admission(jobs, saturated=per_pass_bound and (len(chosen) == budget or pending))


def _record_callers(conn: Connection, chosen: list[_Taken], now: datetime) -> None:
    """A pooled call's chosen number becomes its `from`; each number used is stamped."""
    pooled = [{"b_id": t.call_id, "b_from": t.from_number} for t in chosen if t.pooled]
    if pooled:
        conn.execute(_SET_FROM, pooled)
    used = {(t.account_id, t.from_number) for t in chosen if t.from_number is not None}
    if used:
        conn.execute(
            _USED,
            [{"b_account": a, "b_number": n, "b_now": now} for a, n in sorted(used)],
        )


def reap(conn: Connection, now: datetime, *, lease_s: float, grace_s: float) -> list[Job]:
    """Settle calls whose worker is gone; return admitted calls to enqueue again."""
    expired = conn.execute(
        sa.select(calls.c.id, calls.c.attempt).where(
            calls.c.state.in_(DIALLED_STATES), calls.c.lease_until < now
        )
    ).all()
    for call_id, attempt in expired:
        lifecycle.finish(
            conn,
            call_id,
            attempt,
            DialResult(
                Outcome.FAILED,
                error_message="Interrupted: the worker running this call stopped (its lease "
                "expired). The call is not redialled automatically.",
            ),
            now,
            worker=None,
            allow_retry=False,
            lease_expired_before=now,
        )
    overdue = conn.execute(
        sa.select(calls.c.id, calls.c.attempt).where(
            calls.c.state.in_(DIALLED_STATES),
            calls.c.deadline_at < now - timedelta(seconds=2 * grace_s),
        )
    ).all()
    for call_id, attempt in overdue:
        lifecycle.finish(
            conn,
            call_id,
            attempt,
            DialResult(
                Outcome.FAILED,
                error_message="Watchdog: the call ran past max_duration plus the grace period "
                "and was ended.",
            ),
            now,
            worker=None,
            allow_retry=False,
        )
    stale = conn.execute(
        sa.select(calls.c.id, calls.c.attempt).where(
            calls.c.state == CallState.ADMITTED,
            calls.c.admitted_at < now - timedelta(seconds=lease_s),
        )
    ).all()
    return [Job(call_id, attempt) for call_id, attempt in stale]
