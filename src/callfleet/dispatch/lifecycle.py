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
- `record_opt_out`: the callee asked not to be called again (on the call, or in the
  post-call disposition DO_NOT_CONTACT). In the transaction that ends the call (or
  records its post-call work): the call gets `opted_out`, the number joins the
  account's do-not-call list (reason `opt-out`, the call's id), and every queued or
  admitted call to that number in the account is canceled with that reason. An
  opted-out attempt is never retried.

Post-call work: when the process that ends an answered call has an LLM and the call
has a spoken transcript, `finish` marks it `postcall_state = 'pending'` (due at once:
`lease_until` is the end time) and leaves its webhook and its batch countdown to
`dispatch.postcall`, which calls `settle_call` in the transaction that records the
summary. A batch is therefore complete only when its calls' post-call work is.

The states each UPDATE may start from and the state it writes are the named moves of
`domain.states.CallMoves` (CLAIM, ANSWER, RETRY, END, CANCEL); the statements here
do exactly what that table allows, no more.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.dispatch.routing import TrunkRow, trunk_for_call
from callfleet.domain.latency import call_latency
from callfleet.domain.opt_out import OPT_OUT_REASON
from callfleet.domain.retry import parse_retry, retry_delay
from callfleet.domain.states import (
    ACTIVE_STATES,
    DIALLED_STATES,
    BatchStatus,
    CallMove,
    CallMoves,
    Outcome,
    PostcallState,
    QueueStatus,
)
from callfleet.domain.windows import DEFAULT_WINDOW, next_open, parse_window
from callfleet.store.dnc import add_opt_out
from callfleet.store.events import (
    append_batch_event,
    append_call_ended,
    append_call_event,
)
from callfleet.store.tables import batches, call_attempts, calls, dnc, transcript_turns, trunks
from callfleet.store.views import batch_webhook_payload, call_details
from callfleet.telephony.carrier import DialResult
from callfleet.webhooks.outbox import enqueue_call_webhook, enqueue_delivery

__all__ = [
    "ACTIVE_STATES",
    "Claim",
    "cancel_queued",
    "claim",
    "finish",
    "heartbeat",
    "mark_answered",
    "may_make",
    "needs_postcall",
    "record_opt_out",
    "settle_call",
]

MAX_NETWORK_RETRIES = 3


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
    task: str = ""
    """The call's rendered prompt (the agent's instructions)."""
    request_data: dict[str, Any] = field(default_factory=dict)


def may_make(move: CallMove) -> sa.ColumnElement[bool]:
    """`calls.state` is one `move` starts from (domain.states.CallMoves is the truth).

    One state compiles to `state = ?`, as it always has, rather than `IN (?)`.
    """
    if len(move.sources) == 1:
        return calls.c.state == move.sources[0]
    return calls.c.state.in_(move.sources)


# Statements built once: constructing SQLAlchemy statements costs more than running
# them at a thousand calls a second.
_B = sa.bindparam
_CLAIM = (
    sa.update(calls)
    .where(calls.c.id == _B("b_id"), calls.c.attempt == _B("b_attempt"), may_make(CallMoves.CLAIM))
    .values(
        state=CallMoves.CLAIM.target,
        queue_status=QueueStatus.STARTED,
        lease_owner=_B("b_worker"),
        lease_until=_B("b_lease"),
        started_at=_B("b_now"),
        deadline_at=_B("b_deadline"),
    )
    .returning(
        calls.c.account_id,
        calls.c.batch_id,
        calls.c.to_number,
        calls.c.from_number,
        calls.c.max_duration,
        calls.c.record,
        calls.c.params,
        calls.c.task,
        calls.c.request_data,
        calls.c.rehearsal_of,
    )
)
_RECORD_ATTEMPT = sa.insert(call_attempts).values(
    call_id=_B("b_id"), attempt=_B("b_attempt"), worker=_B("b_worker"), started_at=_B("b_now")
)
# One round trip for the two checks every dial needs: is the number on the
# do-not-call list, and does the account have trunks at all (usually not).
_DIAL_CHECKS = sa.select(
    sa.select(sa.func.count())
    .select_from(dnc)
    .where(dnc.c.account_id == _B("b_account"), dnc.c.phone_number == _B("b_number"))
    .scalar_subquery()
    .label("on_dnc"),
    sa.select(sa.func.count())
    .select_from(trunks)
    .where(trunks.c.account_id == _B("b_account"))
    .scalar_subquery()
    .label("trunks"),
)


def claim(
    conn: Connection,
    call_id: str,
    attempt: int,
    worker: str,
    now: datetime,
    lease_s: float,
    ring_timeout_s: float = 30.0,
    max_duration_hint_min: float = 30.0,
) -> Claim | None:
    # The deadline is the latest a healthy call can end (ringing, then max_duration of
    # talk); it is set from the usual max_duration and corrected below if the call's
    # own differs.
    row = conn.execute(
        _CLAIM,
        {
            "b_id": call_id,
            "b_attempt": attempt,
            "b_worker": worker,
            "b_lease": now + timedelta(seconds=lease_s),
            "b_now": now,
            "b_deadline": now + timedelta(minutes=max_duration_hint_min, seconds=ring_timeout_s),
        },
    ).first()
    if row is None:
        return None
    conn.execute(
        _RECORD_ATTEMPT, {"b_id": call_id, "b_attempt": attempt, "b_worker": worker, "b_now": now}
    )
    append_call_event(
        conn, row.account_id, call_id, row.batch_id, "call.started", CallMoves.CLAIM.target, now
    )
    if row.max_duration != max_duration_hint_min:
        deadline = now + timedelta(minutes=row.max_duration, seconds=ring_timeout_s)
        conn.execute(_SET_DEADLINE, {"b_id": call_id, "b_deadline": deadline})
    # The do-not-call list is checked again at dial time: a number added after the
    # batch was accepted must not ring.
    checks = conn.execute(
        _DIAL_CHECKS, {"b_account": row.account_id, "b_number": row.to_number}
    ).one()
    return Claim(
        call_id=call_id,
        attempt=attempt,
        account_id=row.account_id,
        to_number=row.to_number,
        from_number=row.from_number,
        max_duration_min=row.max_duration,
        record=row.record,
        params=dict(row.params),
        blocked_reason="the number was added to the do-not-call list" if checks.on_dnc else None,
        trunk=_trunk(conn, row, bool(checks.trunks)),
        task=row.task,
        request_data=dict(row.request_data or {}),
    )


def _trunk(conn: Connection, row: Any, has_trunks: bool) -> TrunkRow | None:
    """The trunk the call goes out through; None: the built-in carrier (the simulator).

    A rehearsal call (`rehearsal_of` set) dials one of the simulator's personas in
    place of a real row: it never leaves through a trunk, whatever the account has.
    """
    if not has_trunks or row.rehearsal_of is not None:
        return None
    return trunk_for_call(conn, row.account_id, row.from_number)


_SET_DEADLINE = (
    sa.update(calls).where(calls.c.id == _B("b_id")).values(deadline_at=_B("b_deadline"))
)
_HEARTBEAT = (
    sa.update(calls)
    .where(
        calls.c.id == _B("b_id"),
        calls.c.lease_owner == _B("b_worker"),
        calls.c.state.in_(DIALLED_STATES),
    )
    .values(lease_until=_B("b_lease"))
    .returning(calls.c.hangup_requested)
)
_ANSWERED = (
    sa.update(calls)
    .where(
        calls.c.id == _B("b_id"),
        calls.c.lease_owner == _B("b_worker"),
        may_make(CallMoves.ANSWER),
    )
    .values(state=CallMoves.ANSWER.target, answered_at=_B("b_now"))
    .returning(calls.c.account_id, calls.c.batch_id)
)


def heartbeat(
    conn: Connection, call_id: str, worker: str, now: datetime, lease_s: float
) -> bool | None:
    """Extend the lease. None: fenced off (hang up). Otherwise: is a hangup requested?"""
    row = conn.execute(
        _HEARTBEAT,
        {"b_id": call_id, "b_worker": worker, "b_lease": now + timedelta(seconds=lease_s)},
    ).first()
    return None if row is None else bool(row.hangup_requested)


def mark_answered(conn: Connection, call_id: str, worker: str, now: datetime) -> None:
    row = conn.execute(_ANSWERED, {"b_id": call_id, "b_worker": worker, "b_now": now}).first()
    if row is not None:
        append_call_event(
            conn,
            row.account_id,
            call_id,
            row.batch_id,
            "call.answered",
            CallMoves.ANSWER.target,
            now,
        )


def _queue_status(outcome: Outcome) -> QueueStatus:
    return QueueStatus.CALL_ERROR if outcome == Outcome.FAILED else QueueStatus.COMPLETE


_FINISH_COLUMNS = (
    calls.c.account_id,
    calls.c.to_number,
    calls.c.batch_id,
    calls.c.webhook,
    calls.c.attempt,
    calls.c.attempts_allowed,
    calls.c.network_retries,
    calls.c.retry,
    calls.c.window,
    calls.c.callee_tz,
    calls.c.hangup_requested,
)
_END_ATTEMPT = (
    sa.update(call_attempts)
    .where(call_attempts.c.call_id == _B("b_id"), call_attempts.c.attempt == _B("b_attempt"))
    .values(
        ended_at=_B("b_now"),
        status=_B("b_status"),
        sip_code=_B("b_sip"),
        error_message=_B("b_error"),
    )
)
_ADD_TURN = sa.insert(transcript_turns)
_BATCH_STATUS = sa.select(batches.c.status).where(batches.c.id == _B("b_batch"))


@functools.cache
def _finish_statements(by_worker: bool, lease_expired: bool) -> tuple[Any, Any, Any]:
    """The SELECT, retry UPDATE and terminal UPDATE for one shape of ownership check."""
    where = [
        calls.c.id == _B("b_id"),
        calls.c.attempt == _B("b_attempt"),
        # RETRY starts from the same states as END: the lease holder's (DIALLED_STATES).
        may_make(CallMoves.END),
    ]
    if by_worker:
        where.append(calls.c.lease_owner == _B("b_worker"))
    if lease_expired:
        where.append(calls.c.lease_until < _B("b_expired"))
    select = sa.select(*_FINISH_COLUMNS).where(*where)
    retry = (
        sa.update(calls)
        .where(*where)
        .values(
            state=CallMoves.RETRY.target,
            queue_status=QueueStatus.QUEUED,
            status=_B("b_status"),
            error_message=_B("b_error"),
            attempt=_B("b_next_attempt"),
            attempts_allowed=_B("b_allowed"),
            network_retries=_B("b_network"),
            not_before=_B("b_not_before"),
            lease_owner=None,
            lease_until=None,
            deadline_at=None,
        )
    )
    terminal = (
        sa.update(calls)
        .where(*where)
        .values(
            state=CallMoves.END.target,
            queue_status=_B("b_queue_status"),
            status=_B("b_status"),
            answered_by=_B("b_answered_by"),
            error_message=_B("b_error"),
            ended_at=_B("b_ended"),
            answered_at=_B("b_answered"),
            call_length=_B("b_length"),
            call_ended_by=_B("b_ended_by"),
            endpoint_url=_B("b_endpoint"),
            recording_path=_B("b_recording"),
            model=_B("b_model"),
            latency=_B("b_latency"),
            postcall_state=_B("b_postcall"),
            opted_out=_B("b_opted_out"),
            lease_owner=None,
            # The post-call lease: due at once when post-call work is pending, else NULL
            # (so the post-call loop's range scan on (state, lease_until) sees only it).
            lease_until=_B("b_postcall_due"),
        )
    )
    return select, retry, terminal


def needs_postcall(result: DialResult) -> bool:
    """An answered attempt with something said on it (a summary has something to say)."""
    return result.answered_at is not None and any(
        t.user in ("user", "assistant") for t in result.transcript
    )


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
    postcall: bool = False,
) -> str | None:
    """End the attempt. Returns "retry", "ended", or None if the call was not ours.

    `postcall`: this process has an LLM, so an answered call with a transcript is left
    `pending` for `dispatch.postcall` (its webhook and batch countdown wait for it).
    """
    select, retry_update, terminal_update = _finish_statements(
        worker is not None, lease_expired_before is not None
    )
    key: dict[str, Any] = {"b_id": call_id, "b_attempt": attempt}
    if worker is not None:
        key["b_worker"] = worker
    if lease_expired_before is not None:
        key["b_expired"] = lease_expired_before
    row = conn.execute(select, key).first()
    if row is None:
        return None
    _record_attempt(conn, call_id, attempt, result, now)
    retry_after, error = _network_retry(row, result)
    # An opted-out attempt is never retried, whatever its outcome (domain.retry).
    allow_retry = allow_retry and not result.opted_out
    next_at = _next_attempt_at(conn, row, result, retry_after, now, allow_retry=allow_retry)
    if next_at is not None:
        network = 1 if retry_after is not None else 0
        res = conn.execute(
            retry_update,
            {
                **key,
                "b_status": result.outcome.value,
                "b_error": error,
                "b_next_attempt": attempt + 1,
                "b_allowed": row.attempts_allowed + network,
                "b_network": row.network_retries + network,
                "b_not_before": next_at,
            },
        )
        if res.rowcount != 1:
            return None
        append_call_event(
            conn, row.account_id, call_id, row.batch_id, "call.queued", CallMoves.RETRY.target, now
        )
        return "retry"
    pending = postcall and needs_postcall(result)
    res = conn.execute(terminal_update, {**key, **_terminal_values(result, error, now, pending)})
    if res.rowcount != 1:
        return None
    if result.opted_out:
        record_opt_out(conn, row.account_id, call_id, row.to_number, now, source="call")
    if not pending:
        settle_call(conn, call_id, row.batch_id, row.webhook, now)
    return "ended"


def _record_attempt(
    conn: Connection, call_id: str, attempt: int, result: DialResult, now: datetime
) -> None:
    """Close the attempt's row and keep what was said on it."""
    conn.execute(
        _END_ATTEMPT,
        {
            "b_id": call_id,
            "b_attempt": attempt,
            "b_now": now,
            "b_status": result.outcome.value,
            "b_sip": result.sip_code,
            "b_error": result.error_message,
        },
    )
    if result.transcript:
        conn.execute(
            _ADD_TURN,
            [
                {"call_id": call_id, "user": t.user, "text": t.text, "created_at": t.at}
                for t in result.transcript
            ],
        )


def _network_retry(row: Any, result: DialResult) -> tuple[float | None, str | None]:
    """The retry the network asked for (if still allowed) and the error to record.

    A retry the network asked for (503) does not use up an attempt, up to a cap;
    past it the attempt counts as a plain failure.
    """
    retry_after = result.retry_after_s
    error = result.error_message
    if retry_after is not None and row.network_retries >= MAX_NETWORK_RETRIES:
        retry_after = None
        error = (
            f"{error or 'network unavailable'}; gave up after "
            f"{MAX_NETWORK_RETRIES} retries the network asked for"
        )
    return retry_after, error


def _next_attempt_at(
    conn: Connection,
    row: Any,
    result: DialResult,
    retry_after: float | None,
    now: datetime,
    *,
    allow_retry: bool,
) -> datetime | None:
    """When the call is tried again, or None when this attempt was its last."""
    may_retry = allow_retry and not row.hangup_requested
    may_retry = may_retry and (bool(row.retry) or retry_after is not None)
    if may_retry and row.batch_id is not None:
        status = conn.execute(_BATCH_STATUS, {"b_batch": row.batch_id}).scalar()
        may_retry = status != BatchStatus.STOPPED
    return _retry_at(row, result.outcome, retry_after, now) if may_retry else None


def _terminal_values(
    result: DialResult, error: str | None, now: datetime, pending: bool
) -> dict[str, Any]:
    """The bound values of the terminal UPDATE for how the attempt ended."""
    answered = result.answered_at
    length = 0.0
    if answered is not None:
        length = max(0.0, ((result.ended_at or now) - answered).total_seconds() / 60.0)
    return {
        "b_queue_status": _queue_status(result.outcome),
        "b_status": result.outcome.value,
        "b_answered_by": result.answered_by.value if result.answered_by else None,
        "b_error": error,
        "b_ended": result.ended_at or now,
        "b_answered": answered,
        "b_length": round(length, 4),
        "b_ended_by": result.ended_by.value if result.ended_by else None,
        "b_endpoint": result.endpoint,
        "b_recording": result.recording_path,
        "b_model": result.model,
        "b_latency": call_latency(result.latency_ms),
        "b_postcall": PostcallState.PENDING if pending else None,
        "b_postcall_due": (result.ended_at or now) if pending else None,
        "b_opted_out": result.opted_out,
    }


def _retry_at(
    row: Any, outcome: Outcome, retry_after_s: float | None, now: datetime
) -> datetime | None:
    """When the next attempt may start, or None when there is none."""
    if retry_after_s is not None:
        delay = timedelta(seconds=retry_after_s)
    else:
        if row.attempt >= row.attempts_allowed or not row.retry:
            return None
        found = retry_delay(parse_retry(row.retry, "retry"), outcome.value, row.attempt)
        if found is None:
            return None
        delay = found
    window = parse_window(row.window, "calling_window") if row.window else DEFAULT_WINDOW
    return next_open(window, row.callee_tz, now + delay)


def cancel_queued(conn: Connection, where: Any, now: datetime, message: str) -> int:
    """Cancel calls not yet dialled (queued or admitted) matching `where`; returns how many."""
    found = conn.execute(
        sa.select(calls.c.id, calls.c.batch_id, calls.c.webhook).where(
            where, may_make(CallMoves.CANCEL)
        )
    ).all()
    count = 0
    for call_id, batch_id, webhook in found:
        res = conn.execute(
            sa.update(calls)
            .where(calls.c.id == call_id, may_make(CallMoves.CANCEL))
            .values(
                state=CallMoves.CANCEL.target,
                queue_status=QueueStatus.COMPLETE,
                status=Outcome.CANCELED,
                error_message=message,
                ended_at=now,
                call_length=0.0,
            )
        )
        if res.rowcount == 1:
            count += 1
            settle_call(conn, call_id, batch_id, webhook, now)
    return count


def record_opt_out(
    conn: Connection,
    account_id: str,
    call_id: str,
    number: str,
    now: datetime,
    *,
    source: str,
) -> int:
    """The callee of `call_id` opted out: flag the call, put `number` on the account's
    do-not-call list and cancel the account's calls to it that are not yet dialled.

    Runs inside the transaction that ends the call (`finish`) or records its
    post-call disposition, before the call is settled, so its webhook and
    `call.ended` event carry `opted_out: true`. Returns how many calls it canceled.
    """
    conn.execute(sa.update(calls).where(calls.c.id == call_id).values(opted_out=True))
    add_opt_out(
        conn, account_id, number, call_id=call_id, reason=OPT_OUT_REASON, source=source, now=now
    )
    message = f"{OPT_OUT_REASON}: the callee asked on call {call_id} not to be called again"
    where = sa.and_(
        calls.c.account_id == account_id, calls.c.to_number == number, calls.c.id != call_id
    )
    return cancel_queued(conn, where, now, message)


_COUNT_DOWN = (
    sa.update(batches)
    .where(batches.c.id == _B("b_batch"))
    .values(remaining=batches.c.remaining - 1)
    .returning(batches.c.remaining)
)
_COMPLETE = (
    sa.update(batches)
    .where(
        batches.c.id == _B("b_batch"), batches.c.remaining == 0, batches.c.completed_at.is_(None)
    )
    .values(completed_at=_B("b_now"))
)


def settle_call(
    conn: Connection, call_id: str, batch_id: str | None, webhook: str | None, now: datetime
) -> None:
    """A call is done with (terminal, post-call work over): its webhook, its batch's countdown.

    Called exactly once per call: by the transition that ends it, or, when post-call
    work was pending, by the one that records that work. Its `call.ended` event is
    written here too, so it carries the same details object as the webhook.
    """
    details = call_details(conn, call_id)
    assert details is not None, f"no call {call_id}"
    append_call_ended(conn, details, now)
    if webhook:
        enqueue_call_webhook(conn, call_id, webhook, batch_id, now)
    if batch_id is None:
        return
    remaining = conn.execute(_COUNT_DOWN, {"b_batch": batch_id}).scalar()
    if remaining != 0:
        return
    done = conn.execute(_COMPLETE, {"b_batch": batch_id, "b_now": now})
    if done.rowcount != 1:
        return
    batch = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).one()
    # A stopped batch stays `stopped`; a running or paused one (paused after its
    # last call was admitted) is completed (domain.states.BATCH_MOVES).
    if batch.status in (BatchStatus.RUNNING, BatchStatus.PAUSED):
        conn.execute(
            sa.update(batches).where(batches.c.id == batch_id).values(status=BatchStatus.COMPLETED)
        )
    payload = batch_webhook_payload(conn, batch_id)
    append_batch_event(conn, batch.account_id, batch_id, "batch.completed", payload)
    if batch.batch_webhook:
        enqueue_delivery(
            conn,
            account_id=batch.account_id,
            event="batch.completed",
            url=batch.batch_webhook,
            payload=payload,
            call_id=None,
            batch_id=batch_id,
            now=now,
        )
