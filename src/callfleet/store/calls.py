"""Queries on an account's calls. Every function takes the account's id first.

Writes that change a call's state on the dispatch side (claiming, settling,
cancelling) live in `callfleet.dispatch.lifecycle`; this module holds what the API
asks of the calls table: insert, find, list, and flag a live call for hang-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.clock import utcnow
from callfleet.domain.states import DIALLED_STATES, BatchStatus, CallState
from callfleet.store.events import append_queued
from callfleet.store.paging import Page
from callfleet.store.tables import batches, calls

__all__ = [
    "CallFilter",
    "batch_call_ids",
    "batch_of",
    "batch_calls",
    "get_call",
    "in_batch",
    "insert_calls",
    "export_page",
    "list_calls",
    "queued_elsewhere",
    "request_batch_hangups",
    "request_hangup",
    "the_call",
]

INSERT_CHUNK = 5000
"""Rows per INSERT: a 100,000-call batch goes in as 20 statements."""


@dataclass(frozen=True)
class CallFilter:
    """The filters of `GET /v1/calls`; None means "any". Dates are aware UTC."""

    batch_id: str | None = None
    campaign_id: str | None = None
    to_number: str | None = None
    from_number: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    completed: bool | None = None
    answered_by: str | None = None
    status: str | None = None
    """An `Outcome` value (the ended call's `status`) or a live `CallState` (queued,
    admitted, dialing, live): `callfleet.domain.states.CALL_STATUS_FILTERS`."""


def get_call(conn: Connection, account_id: str, call_id: str) -> Row[Any] | None:
    return conn.execute(
        sa.select(calls).where(calls.c.id == call_id, calls.c.account_id == account_id)
    ).first()


def insert_calls(conn: Connection, account_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert prepared call rows (from `prepare_calls`), all of them the account's."""
    if any(values["account_id"] != account_id for values in rows):
        raise ValueError("a call row belongs to another account")
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = list(rows[start : start + INSERT_CHUNK])
        conn.execute(sa.insert(calls), chunk)
        # call.queued in the same transaction (store/events.py)
        append_queued(conn, chunk, chunk[0].get("created_at") or utcnow())
    _note_row_columns(conn, rows)


def _note_row_columns(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Add the rows' own column names, in input order, to their batch's `row_columns`.

    The export lists a batch's columns in this order; appended rows add theirs after.
    """
    by_batch: dict[str, dict[str, None]] = {}
    for values in rows:
        batch_id = values.get("batch_id")
        if batch_id is None:
            continue
        names = by_batch.setdefault(batch_id, {})
        for name in values.get("request_data") or {}:
            names.setdefault(str(name), None)
    for batch_id, names in by_batch.items():
        known = conn.execute(
            sa.select(batches.c.row_columns).where(batches.c.id == batch_id)
        ).scalar()
        merged = dict.fromkeys(known or [])
        merged.update(names)
        if list(merged) != list(known or []):
            conn.execute(
                sa.update(batches).where(batches.c.id == batch_id).values(row_columns=list(merged))
            )


def _where(account_id: str, f: CallFilter) -> list[Any]:
    where: list[Any] = [calls.c.account_id == account_id]
    if f.batch_id is not None:
        where.append(calls.c.batch_id == f.batch_id)
    if f.campaign_id is not None:
        where.append(
            calls.c.batch_id.in_(
                sa.select(batches.c.id).where(
                    batches.c.account_id == account_id, batches.c.campaign_id == f.campaign_id
                )
            )
        )
    if f.to_number is not None:
        where.append(calls.c.to_number == f.to_number)
    if f.from_number is not None:
        where.append(calls.c.from_number == f.from_number)
    if f.start_date is not None:
        where.append(calls.c.created_at >= f.start_date)
    if f.end_date is not None:
        where.append(calls.c.created_at <= f.end_date)
    if f.completed is not None:
        where.append(
            (calls.c.state == CallState.ENDED)
            if f.completed
            else (calls.c.state != CallState.ENDED)
        )
    if f.answered_by is not None:
        where.append(calls.c.answered_by == f.answered_by)
    if f.status is not None:
        if f.status in {s.value for s in CallState}:
            where.append(calls.c.state == f.status)
        else:
            where.append(calls.c.state == CallState.ENDED)
            where.append(calls.c.status == f.status)
    return where


_LISTED = sa.select(calls, batches.c.call_params.label("batch_call_params")).select_from(
    calls.outerjoin(batches, batches.c.id == calls.c.batch_id)
)
"""A call row with its batch's shared fields (`batch_call_params`: the batch-level
`metadata` of a row that has none of its own); None for a single call."""


def list_calls(
    conn: Connection, account_id: str, f: CallFilter, page: Page
) -> tuple[int, list[Row[Any]]]:
    """How many calls match, and the page of them (by `created_at`, then submission order)."""
    where = _where(account_id, f)
    order = calls.c.created_at.asc() if page.ascending else calls.c.created_at.desc()
    total = conn.execute(sa.select(sa.func.count()).select_from(calls).where(*where)).scalar()
    rows = conn.execute(
        _LISTED.where(*where).order_by(order, calls.c.seq).offset(page.offset).limit(page.limit)
    ).all()
    return int(total or 0), list(rows)


def batch_calls(
    conn: Connection, account_id: str, batch_id: str, offset: int, limit: int
) -> list[Row[Any]]:
    """A slice of a batch's calls in submission order."""
    return list(
        conn.execute(
            _LISTED.where(calls.c.batch_id == batch_id, calls.c.account_id == account_id)
            .order_by(calls.c.seq)
            .offset(offset)
            .limit(limit)
        ).all()
    )


def batch_call_ids(
    conn: Connection, account_id: str, batch_id: str, *, ended: bool = False
) -> list[str]:
    """The ids of a batch's calls (only the ended ones with `ended`) in submission order."""
    query = sa.select(calls.c.id).where(
        calls.c.batch_id == batch_id, calls.c.account_id == account_id
    )
    if ended:
        query = query.where(calls.c.state == CallState.ENDED)
    return [r[0] for r in conn.execute(query.order_by(calls.c.seq))]


def batch_of(conn: Connection, call_id: str) -> str | None:
    """The batch a call belongs to (None for a single call)."""
    return conn.execute(sa.select(calls.c.batch_id).where(calls.c.id == call_id)).scalar()


def in_batch(account_id: str, batch_id: str) -> Any:
    """The predicate "a call of this batch", for `dispatch.lifecycle.cancel_queued`."""
    return sa.and_(calls.c.batch_id == batch_id, calls.c.account_id == account_id)


def the_call(account_id: str, call_id: str) -> Any:
    """The predicate "this call", for `dispatch.lifecycle.cancel_queued`."""
    return sa.and_(calls.c.id == call_id, calls.c.account_id == account_id)


def request_hangup(conn: Connection, account_id: str, call_id: str) -> bool:
    """Flag the call for hang-up if it is dialling or live; True if it was."""
    res = conn.execute(
        sa.update(calls)
        .where(
            calls.c.id == call_id,
            calls.c.account_id == account_id,
            calls.c.state.in_(DIALLED_STATES),
        )
        .values(hangup_requested=True)
    )
    return res.rowcount == 1


def request_batch_hangups(conn: Connection, account_id: str, batch_id: str) -> list[str]:
    """Flag every dialling or live call of the batch for hang-up; returns their ids."""
    live = [
        r[0]
        for r in conn.execute(
            sa.select(calls.c.id).where(
                calls.c.batch_id == batch_id,
                calls.c.account_id == account_id,
                calls.c.state.in_(DIALLED_STATES),
            )
        )
    ]
    if live:
        conn.execute(sa.update(calls).where(calls.c.id.in_(live)).values(hangup_requested=True))
    return live


EXPORT_PAGE = 1000
"""Rows per keyset page of a batch's export."""


def export_page(
    conn: Connection, account_id: str, batch_id: str, after: tuple[int, str] | None
) -> list[Row[Any]]:
    """The next page of a batch's calls in input order (`seq`, then id), after `after`."""
    query = (
        sa.select(
            calls.c.id,
            calls.c.seq,
            calls.c.request_data,
            calls.c.state,
            calls.c.queue_status,
            calls.c.status,
            calls.c.answered_by,
            calls.c.attempt,
            calls.c.started_at,
            calls.c.ended_at,
            calls.c.call_length,
            calls.c.summary,
            calls.c.disposition_tag,
            calls.c.opted_out,
            calls.c.error_message,
            calls.c.recording_path,
            calls.c.analysis,
        )
        .where(calls.c.batch_id == batch_id, calls.c.account_id == account_id)
        .order_by(calls.c.seq, calls.c.id)
        .limit(EXPORT_PAGE)
    )
    if after is not None:
        query = query.where(
            sa.tuple_(calls.c.seq, calls.c.id)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    return list(conn.execute(query).all())


def queued_elsewhere(
    conn: Connection, account_id: str, candidates: Sequence[str], batch_id: str | None
) -> dict[str, str]:
    """Which of `candidates` (E.164) already wait in another running or paused batch
    of the account (queued or admitted), each with one such batch's id; 500 at a time."""
    found: dict[str, str] = {}
    uniq = sorted(set(candidates))
    for start in range(0, len(uniq), 500):
        chunk = uniq[start : start + 500]
        rows = conn.execute(
            sa.select(calls.c.to_number, sa.func.min(calls.c.batch_id))
            .join(batches, batches.c.id == calls.c.batch_id)
            .where(
                calls.c.account_id == account_id,
                calls.c.to_number.in_(chunk),
                calls.c.state.in_((CallState.QUEUED, CallState.ADMITTED)),
                batches.c.status.in_((BatchStatus.RUNNING, BatchStatus.PAUSED)),
                *([calls.c.batch_id != batch_id] if batch_id is not None else []),
            )
            .group_by(calls.c.to_number)
        )
        found.update({str(number): str(batch) for number, batch in rows})
    return found
