"""An account's caller IDs, their pools and their health. Every function takes the
account's id first.

Health is counted from the dial attempts (`call_attempts`) of calls that went out
from the number in its last 7 days, or since it was last resumed if that is more
recent: attempts, answer rate, median answered length, short-call rate (hung up
within 10 s of answer), decline rate. `pause_number` is a conditional update, so
two hoppers (or a hopper and a retry) pausing at once record one pause and one
`number.paused` event.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.domain.states import CallState
from callfleet.store.ids import new_id
from callfleet.store.tables import batches, call_attempts, calls, numbers

__all__ = [
    "HEALTH_DAYS",
    "PAUSED_REASON",
    "POOL_PREFIX",
    "SHORT_CALL_S",
    "Health",
    "add_number",
    "answer_counts",
    "get_number",
    "health",
    "list_numbers",
    "numbers_on_trunk",
    "owned_numbers",
    "pause_number",
    "pause_webhook",
    "remove_number",
    "resume_number",
]

PAUSED_REASON = "caller_id_paused:"
"""How a queued call held by a paused caller ID's `waiting_reason` starts."""
POOL_PREFIX = "pool:"
"""A call's `from` of `pool:NAME` picks a number of the pool at admission."""
HEALTH_DAYS = 7
SHORT_CALL_S = 10.0
"""An answered call shorter than this counts as a short call (the callee hung up)."""
_ANSWERED = ("completed", "voicemail")
_DECLINED = ("declined",)
_WATCH_MIN_ATTEMPTS = 10
"""Attempts a number needs before its figures can put it on watch."""


@dataclass(frozen=True)
class Health:
    """A caller ID's rolling figures; the rates are None until it has an attempt
    (the median until it has an answered call)."""

    attempts: int
    answer_rate: float | None
    median_answered_s: float | None
    short_call_rate: float | None
    decline_rate: float | None
    state: str
    """healthy | watch | paused"""

    def to_json(self) -> dict[str, Any]:
        return {
            "window_days": HEALTH_DAYS,
            "attempts": self.attempts,
            "answer_rate": self.answer_rate,
            "median_answered_length_s": self.median_answered_s,
            "short_call_rate": self.short_call_rate,
            "decline_rate": self.decline_rate,
            "state": self.state,
        }


def add_number(
    conn: Connection,
    account_id: str,
    phone_number: str,
    label: str | None,
    cps: float | None,
    trunk_id: str | None,
    now: datetime,
    *,
    pool: str | None = None,
    webhook: str | None = None,
) -> Row[Any]:
    """Insert the caller ID and return its row.

    Raises `IntegrityError` if the account already has that number.
    """
    row_id = new_id()
    conn.execute(
        sa.insert(numbers).values(
            id=row_id,
            account_id=account_id,
            phone_number=phone_number,
            label=label,
            cps=cps,
            trunk_id=trunk_id,
            created_at=now,
            pool=pool,
            webhook=webhook,
        )
    )
    return conn.execute(sa.select(numbers).where(numbers.c.id == row_id)).one()


def list_numbers(conn: Connection, account_id: str) -> list[Row[Any]]:
    """The account's caller IDs, oldest first."""
    return list(
        conn.execute(
            sa.select(numbers)
            .where(numbers.c.account_id == account_id)
            .order_by(numbers.c.created_at)
        ).all()
    )


def remove_number(conn: Connection, account_id: str, phone_number: str) -> bool:
    """Delete the caller ID; False if the account has no such number."""
    res = conn.execute(
        sa.delete(numbers).where(
            numbers.c.account_id == account_id, numbers.c.phone_number == phone_number
        )
    )
    return res.rowcount != 0


def numbers_on_trunk(conn: Connection, account_id: str, trunk_id: str) -> list[str]:
    """The account's caller IDs that call through the trunk."""
    return [
        r[0]
        for r in conn.execute(
            sa.select(numbers.c.phone_number).where(
                numbers.c.trunk_id == trunk_id, numbers.c.account_id == account_id
            )
        ).all()
    ]


def owned_numbers(conn: Connection, account_id: str) -> set[str]:
    """What a call's `from` may be: the account's caller IDs (E.164) and `pool:NAME`
    for each pool that has a number."""
    rows = conn.execute(
        sa.select(numbers.c.phone_number, numbers.c.pool).where(numbers.c.account_id == account_id)
    )
    owned: set[str] = set()
    for number, pool in rows:
        owned.add(number)
        if pool:
            owned.add(POOL_PREFIX + pool)
    return owned


def get_number(conn: Connection, account_id: str, phone_number: str) -> Row[Any] | None:
    return conn.execute(
        sa.select(numbers).where(
            numbers.c.account_id == account_id, numbers.c.phone_number == phone_number
        )
    ).one_or_none()


def _since(row: Row[Any], now: datetime) -> datetime:
    start = now - timedelta(days=HEALTH_DAYS)
    return max(start, row.health_from) if row.health_from is not None else start


def _attempts_query(account_id: Any, phone_number: Any, since: Any) -> sa.Select[Any]:
    return (
        sa.select(
            call_attempts.c.status,
            sa.case(
                (call_attempts.c.attempt == calls.c.attempt, calls.c.call_length), else_=None
            ).label("length"),
        )
        .join(calls, calls.c.id == call_attempts.c.call_id)
        .where(
            calls.c.account_id == account_id,
            calls.c.from_number == phone_number,
            call_attempts.c.started_at >= since,
            call_attempts.c.status.is_not(None),
        )
    )


def answer_counts(
    conn: Connection, account_id: str, phone_number: str, since: datetime
) -> tuple[int, int]:
    """(ended attempts, answered attempts) from the number since `since`: what the
    hopper's auto-pause reads, in one aggregate."""
    total, answered = conn.execute(
        _ANSWER_COUNTS, {"b_account": account_id, "b_number": phone_number, "b_since": since}
    ).one()
    return int(total), int(answered)


_COUNTED = _attempts_query(
    sa.bindparam("b_account"), sa.bindparam("b_number"), sa.bindparam("b_since")
).subquery()
# Built once: the hopper may ask before every call from a number.
_ANSWER_COUNTS = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(sa.case((_COUNTED.c.status.in_(_ANSWERED), 1), else_=0)), 0),
)


def health(conn: Connection, row: Row[Any], now: datetime, min_answer_rate: float) -> Health:
    """The number's figures over its last 7 days (or since its last resume)."""
    found = conn.execute(_attempts_query(row.account_id, row.phone_number, _since(row, now))).all()
    attempts = len(found)
    answered = [r for r in found if r.status in _ANSWERED]
    lengths = [float(r.length) for r in answered if r.length is not None]
    declined = sum(1 for r in found if r.status in _DECLINED)
    answer_rate = len(answered) / attempts if attempts else None
    short_rate = sum(1 for x in lengths if x < SHORT_CALL_S) / len(lengths) if lengths else None
    decline_rate = declined / attempts if attempts else None
    state = "healthy"
    if row.paused_at is not None:
        state = "paused"
    elif attempts >= _WATCH_MIN_ATTEMPTS and (
        (answer_rate is not None and answer_rate < 2 * min_answer_rate)
        or (short_rate is not None and short_rate >= 0.5)
        or (decline_rate is not None and decline_rate >= 0.3)
    ):
        state = "watch"
    return Health(
        attempts,
        answer_rate,
        statistics.median(lengths) if lengths else None,
        short_rate,
        decline_rate,
        state,
    )


def pause_number(
    conn: Connection, account_id: str, phone_number: str, reason: str, now: datetime
) -> bool:
    """Pause the number unless it is paused already; True if this call paused it."""
    res = conn.execute(
        sa.update(numbers)
        .where(
            numbers.c.account_id == account_id,
            numbers.c.phone_number == phone_number,
            numbers.c.paused_at.is_(None),
        )
        .values(paused_at=now, paused_reason=reason)
    )
    return res.rowcount == 1


def resume_number(conn: Connection, account_id: str, phone_number: str, now: datetime) -> bool:
    """Lift a pause; its figures start afresh from now, and the calls its pause held
    (its own, or its pool's) come up at once. False if there is no such number."""
    row = get_number(conn, account_id, phone_number)
    if row is None:
        return False
    conn.execute(
        sa.update(numbers)
        .where(numbers.c.id == row.id)
        .values(paused_at=None, paused_reason=None, health_from=now)
    )
    callers = [phone_number] + ([POOL_PREFIX + row.pool] if row.pool else [])
    conn.execute(
        sa.update(calls)
        .where(
            calls.c.account_id == account_id,
            calls.c.state == CallState.QUEUED,
            calls.c.from_number.in_(callers),
            calls.c.waiting_reason.like(f"{PAUSED_REASON}%"),
        )
        .values(not_before=now, waiting_reason=None)
    )
    return True


def pause_webhook(conn: Connection, account_id: str, phone_number: str) -> str | None:
    """Where the number's `number.paused` event goes: the number's own `webhook`, else
    the `batch_webhook` of the latest batch that called from it, else nowhere (the
    pause still shows in GET /v1/numbers)."""
    own = conn.execute(
        sa.select(numbers.c.webhook).where(
            numbers.c.account_id == account_id, numbers.c.phone_number == phone_number
        )
    ).scalar()
    if own:
        return str(own)
    latest = conn.execute(
        sa.select(batches.c.batch_webhook)
        .join(calls, calls.c.batch_id == batches.c.id)
        .where(
            calls.c.account_id == account_id,
            calls.c.from_number == phone_number,
            batches.c.batch_webhook.is_not(None),
            calls.c.admitted_at.is_not(None),
        )
        .order_by(calls.c.admitted_at.desc())
        .limit(1)
    ).scalar()
    return str(latest) if latest else None
