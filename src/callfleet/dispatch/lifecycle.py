"""The call state machine in SQL: claim, heartbeat, answer, finish, cancel.

Each function takes a connection inside a transaction and is a conditional UPDATE,
so it is safe under redelivery, races and crashes:

- `claim` turns an `admitted` call of exactly this attempt into `dialing`, takes the
  lease and records the attempt (whose primary key refuses a second dial). Zero rows
  means another delivery got there first: do not dial.
- `heartbeat` extends the lease only for its owner; zero rows means the call was
  taken away (fenced), so the worker must hang up.
- `finish` ends an attempt: a retry (back to `queued`, attempt + 1, no earlier than
  the callee's next window) or a terminal status. A terminal status decrements the
  batch's `remaining` in the same transaction; the transition that brings it to zero
  completes the batch and writes its webhook, so that happens exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.dispatch.routing import TrunkRow, trunk_for_call
from callfleet.domain.retry import parse_retry, retry_delay
from callfleet.domain.windows import DEFAULT_WINDOW, next_open, parse_window
from callfleet.store.tables import batches, call_attempts, calls, dnc, transcript_turns
from callfleet.store.views import batch_webhook_payload, call_details
from callfleet.telephony.carrier import DialResult, Outcome
from callfleet.webhooks.outbox import enqueue_delivery

__all__ = [
    "ACTIVE_STATES",
    "Claim",
    "cancel_queued",
    "claim",
    "finish",
    "heartbeat",
    "mark_answered",
]

ACTIVE_STATES = ("admitted", "dialing", "live")
MAX_NETWORK_RETRIES = 3
DIALLED_STATES = ("dialing", "live")


@dataclass(frozen=True)
class Claim:
    """What a worker needs to place the claimed attempt."""

    call_id: str
    attempt: int
    account_id: str
    to_number: str
    from_number: str | None
    max_duration_min: float
    record: bool
    params: dict[str, Any]
    blocked_reason: str | None = None
    trunk: TrunkRow | None = None


def claim(
    conn: Connection,
    call_id: str,
    attempt: int,
    worker: str,
    now: datetime,
    lease_s: float,
    ring_timeout_s: float = 30.0,
) -> Claim | None:
    res = conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_id, calls.c.attempt == attempt, calls.c.state == "admitted")
        .values(
            state="dialing",
            queue_status="started",
            lease_owner=worker,
            lease_until=now + timedelta(seconds=lease_s),
            started_at=now,
        )
    )
    if res.rowcount != 1:
        return None
    row = conn.execute(sa.select(calls).where(calls.c.id == call_id)).one()
    conn.execute(
        sa.insert(call_attempts).values(
            call_id=call_id, attempt=attempt, worker=worker, started_at=now
        )
    )
    # The latest a healthy call can end: ringing, then max_duration of talk.
    deadline = now + timedelta(minutes=row.max_duration, seconds=ring_timeout_s)
    conn.execute(sa.update(calls).where(calls.c.id == call_id).values(deadline_at=deadline))
    # The do-not-call list is checked again at dial time: a number added after the
    # batch was accepted must not ring.
    on_dnc = conn.execute(
        sa.select(dnc.c.phone_number).where(
            dnc.c.account_id == row.account_id, dnc.c.phone_number == row.to_number
        )
    ).first()
    return Claim(
        call_id=call_id,
        attempt=attempt,
        account_id=row.account_id,
        to_number=row.to_number,
        from_number=row.from_number,
        max_duration_min=row.max_duration,
        record=row.record,
        params=dict(row.params),
        blocked_reason="the number was added to the do-not-call list" if on_dnc else None,
        trunk=trunk_for_call(conn, row.account_id, row.from_number),
    )


def heartbeat(
    conn: Connection, call_id: str, worker: str, now: datetime, lease_s: float
) -> bool | None:
    """Extend the lease. None: fenced off (hang up). Otherwise: is a hangup requested?"""
    res = conn.execute(
        sa.update(calls)
        .where(
            calls.c.id == call_id,
            calls.c.lease_owner == worker,
            calls.c.state.in_(DIALLED_STATES),
        )
        .values(lease_until=now + timedelta(seconds=lease_s))
    )
    if res.rowcount != 1:
        return None
    flag = conn.execute(sa.select(calls.c.hangup_requested).where(calls.c.id == call_id)).scalar()
    return bool(flag)


def mark_answered(conn: Connection, call_id: str, worker: str, now: datetime) -> None:
    conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_id, calls.c.lease_owner == worker, calls.c.state == "dialing")
        .values(state="live", answered_at=now)
    )


def _queue_status(outcome: Outcome, error: str | None) -> str:
    if outcome == Outcome.FAILED:
        return "call_error"
    return "complete"


def finish(
    conn: Connection,
    call_id: str,
    attempt: int,
    result: DialResult,
    now: datetime,
    *,
    worker: str | None,
    allow_retry: bool = True,
    lease_expired_before: datetime | None = None,
) -> str | None:
    """End the attempt. Returns "retry", "ended", or None if the call was not ours."""
    conditions = [
        calls.c.id == call_id,
        calls.c.attempt == attempt,
        calls.c.state.in_(DIALLED_STATES),
    ]
    if worker is not None:
        conditions.append(calls.c.lease_owner == worker)
    if lease_expired_before is not None:
        conditions.append(calls.c.lease_until < lease_expired_before)
    row = conn.execute(sa.select(calls).where(*conditions)).first()
    if row is None:
        return None
    conn.execute(
        sa.update(call_attempts)
        .where(call_attempts.c.call_id == call_id, call_attempts.c.attempt == attempt)
        .values(
            ended_at=now,
            status=result.outcome.value,
            sip_code=result.sip_code,
            error_message=result.error_message,
        )
    )
    if result.transcript:
        conn.execute(
            sa.insert(transcript_turns),
            [
                {"call_id": call_id, "user": t.user, "text": t.text, "created_at": t.at}
                for t in result.transcript
            ],
        )
    batch_status = None
    if row.batch_id is not None:
        batch_status = conn.execute(
            sa.select(batches.c.status).where(batches.c.id == row.batch_id)
        ).scalar()
    can_retry = allow_retry and not row.hangup_requested and batch_status != "stopped"
    next_at = _retry_at(row, result, now) if can_retry else None
    if next_at is not None:
        network = result.retry_after_s is not None
        res = conn.execute(
            sa.update(calls)
            .where(*conditions)
            .values(
                state="queued",
                queue_status="queued",
                status=result.outcome.value,
                error_message=result.error_message,
                attempt=attempt + 1,
                attempts_allowed=row.attempts_allowed + (1 if network else 0),
                network_retries=row.network_retries + (1 if network else 0),
                not_before=next_at,
                lease_owner=None,
                lease_until=None,
                deadline_at=None,
            )
        )
        return "retry" if res.rowcount == 1 else None

    answered = result.answered_at
    length = 0.0
    if answered is not None:
        length = max(0.0, ((result.ended_at or now) - answered).total_seconds() / 60.0)
    res = conn.execute(
        sa.update(calls)
        .where(*conditions)
        .values(
            state="ended",
            queue_status=_queue_status(result.outcome, result.error_message),
            status=result.outcome.value,
            answered_by=result.answered_by.value if result.answered_by else None,
            error_message=result.error_message,
            ended_at=result.ended_at or now,
            answered_at=answered,
            call_length=round(length, 4),
            call_ended_by=result.ended_by.value if result.ended_by else None,
            endpoint_url=result.endpoint,
            recording_path=result.recording_path,
            lease_owner=None,
            lease_until=None,
        )
    )
    if res.rowcount != 1:
        return None
    _after_terminal(conn, call_id, row.batch_id, row.webhook, now)
    return "ended"


def _retry_at(row: Any, result: DialResult, now: datetime) -> datetime | None:
    if result.retry_after_s is not None and row.network_retries < MAX_NETWORK_RETRIES:
        delay = timedelta(seconds=result.retry_after_s)
    else:
        if result.retry_after_s is not None:
            # The network kept refusing: this attempt now counts as a plain failure.
            result.retry_after_s = None
            result.error_message = (
                f"{result.error_message or 'network unavailable'}; gave up after "
                f"{MAX_NETWORK_RETRIES} retries the network asked for"
            )
        if row.attempt >= row.attempts_allowed or not row.retry:
            return None
        policy = parse_retry(row.retry, "retry")
        found = retry_delay(policy, result.outcome.value, row.attempt)
        if found is None:
            return None
        delay = found
    window = parse_window(row.window, "calling_window") if row.window else DEFAULT_WINDOW
    return next_open(window, row.callee_tz, now + delay)


def cancel_queued(conn: Connection, where: Any, now: datetime, message: str) -> int:
    """Cancel calls not yet dialled (queued or admitted) matching `where`; returns how many."""
    found = conn.execute(
        sa.select(calls.c.id, calls.c.batch_id, calls.c.webhook).where(
            where, calls.c.state.in_(("queued", "admitted"))
        )
    ).all()
    count = 0
    for call_id, batch_id, webhook in found:
        res = conn.execute(
            sa.update(calls)
            .where(calls.c.id == call_id, calls.c.state.in_(("queued", "admitted")))
            .values(
                state="ended",
                queue_status="complete",
                status=Outcome.CANCELED.value,
                error_message=message,
                ended_at=now,
                call_length=0.0,
            )
        )
        if res.rowcount == 1:
            count += 1
            _after_terminal(conn, call_id, batch_id, webhook, now)
    return count


def _after_terminal(
    conn: Connection, call_id: str, batch_id: str | None, webhook: str | None, now: datetime
) -> None:
    """Webhooks for a call that just became terminal, and its batch's countdown."""
    if webhook:
        details = call_details(conn, call_id)
        assert details is not None
        enqueue_delivery(
            conn,
            account_id=str(details["_account_id"]),
            event="call.completed",
            url=webhook,
            payload={k: v for k, v in details.items() if not k.startswith("_")},
            call_id=call_id,
            batch_id=batch_id,
            now=now,
        )
    if batch_id is None:
        return
    conn.execute(
        sa.update(batches).where(batches.c.id == batch_id).values(remaining=batches.c.remaining - 1)
    )
    done = conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.remaining == 0, batches.c.completed_at.is_(None))
        .values(completed_at=now)
    )
    if done.rowcount != 1:
        return
    batch = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).one()
    if batch.status == "running":
        conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(status="completed"))
    if batch.batch_webhook:
        enqueue_delivery(
            conn,
            account_id=batch.account_id,
            event="batch.completed",
            url=batch.batch_webhook,
            payload=batch_webhook_payload(conn, batch_id),
            call_id=None,
            batch_id=batch_id,
            now=now,
        )
