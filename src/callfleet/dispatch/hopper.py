"""The hopper: admission of queued calls, one transaction per pass.

A call is admitted only when its account has a free slot (calls admitted, dialling
or live count against the account's cap), its caller ID has a calls-per-second
token, its `not_before` has come (start_time and the next opening of the callee's
calling window), and the window is still open now. Admission flips the call to
`admitted` and hands it to the engine in the same transaction. The reaper
(`reap`) turns expired leases into terminal `interrupted` failures, forces calls
past their watchdog deadline to end, and re-enqueues admitted calls whose job was
lost; it never re-dials an attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.dispatch import lifecycle
from callfleet.dispatch.limits import TokenBuckets
from callfleet.dispatch.routing import load_routes
from callfleet.domain.windows import DEFAULT_WINDOW, is_open, next_open, parse_window
from callfleet.store.tables import accounts, calls
from callfleet.telephony.carrier import DialResult, Outcome

__all__ = ["Admission", "Job", "admission_pass", "reap"]


_ADMIT = (
    sa.update(calls)
    .where(calls.c.id.in_(sa.bindparam("b_ids", expanding=True)), calls.c.state == "queued")
    .values(state="admitted", queue_status="allocated", admitted_at=sa.bindparam("b_now"))
    .returning(calls.c.id, calls.c.attempt)
)


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


def admission_pass(
    conn: Connection,
    now: datetime,
    *,
    default_cap: int,
    default_cps: float,
    buckets: TokenBuckets,
    max_per_pass: int = 2000,
) -> Admission:
    active = _active_counts(conn)
    caps = conn.execute(sa.select(accounts.c.id, accounts.c.concurrency_cap)).all()
    routes = load_routes(conn)
    mono = time.monotonic()
    jobs: list[Job] = []
    saturated = False
    for account_id, cap in caps:
        free = (cap or default_cap) - active.get(account_id, 0)
        if free <= 0:
            continue
        budget = min(free, max_per_pass - len(jobs))
        if budget <= 0:
            saturated = True
            break
        rows = conn.execute(
            sa.select(
                calls.c.id, calls.c.attempt, calls.c.from_number, calls.c.window, calls.c.callee_tz
            )
            .where(
                calls.c.account_id == account_id,
                calls.c.state == "queued",
                calls.c.not_before <= now,
            )
            .order_by(calls.c.not_before, calls.c.seq)
            .limit(budget)
        ).all()
        exhausted: set[str] = set()
        chosen: list[str] = []
        for row in rows:
            window = parse_window(row.window, "calling_window") if row.window else DEFAULT_WINDOW
            if not is_open(window, row.callee_tz, now):
                conn.execute(
                    sa.update(calls)
                    .where(calls.c.id == row.id, calls.c.state == "queued")
                    .values(not_before=next_open(window, row.callee_tz, now))
                )
                continue
            bucket, rate = routes.pacing(account_id, row.from_number, default_cps)
            if bucket in exhausted:
                continue
            if not buckets.take(bucket, rate, mono):
                exhausted.add(bucket)
                continue
            chosen.append(row.id)
        if chosen:
            admitted = conn.execute(_ADMIT, {"b_ids": chosen, "b_now": now}).all()
            jobs.extend(Job(r.id, r.attempt) for r in admitted)
        if len(rows) == budget and budget < free and not exhausted:
            saturated = True
    return Admission(jobs, saturated)


def reap(conn: Connection, now: datetime, *, lease_s: float, grace_s: float) -> list[Job]:
    """Settle calls whose worker is gone; return admitted calls to enqueue again."""
    expired = conn.execute(
        sa.select(calls.c.id, calls.c.attempt).where(
            calls.c.state.in_(("dialing", "live")), calls.c.lease_until < now
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
            calls.c.state.in_(("dialing", "live")),
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
            calls.c.state == "admitted", calls.c.admitted_at < now - timedelta(seconds=lease_s)
        )
    ).all()
    return [Job(call_id, attempt) for call_id, attempt in stale]
