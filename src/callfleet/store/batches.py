"""Queries on an account's batches and campaigns. Every function takes the account's id first.

A batch is written in the same transaction as its calls (`store.calls.insert_calls`);
the caller owns that transaction. Settling a batch as calls end is dispatch's work
(`callfleet.dispatch.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.clock import utcnow
from callfleet.domain.call_fields import expand_call
from callfleet.domain.states import BatchStatus
from callfleet.store.events import append_batch_event
from callfleet.store.paging import Page
from callfleet.store.tables import batches, calls, campaigns

__all__ = [
    "NewBatch",
    "add_calls",
    "batch_numbers",
    "expand_stored_call",
    "ensure_campaign",
    "get_batch",
    "insert_batch",
    "list_batches",
    "mark_stopped",
    "move_batch",
]


@dataclass(frozen=True)
class NewBatch:
    """What a new batch row holds besides its account and the time."""

    id: str
    campaign_id: str | None
    label: str | None
    base_prompt: str
    call_params: dict[str, Any]
    test_mode: bool
    batch_webhook: str | None
    total_calls: int
    rehearsal: bool = False


def get_batch(conn: Connection, account_id: str, batch_id: str) -> Row[Any] | None:
    return conn.execute(
        sa.select(batches).where(batches.c.id == batch_id, batches.c.account_id == account_id)
    ).first()


def list_batches(
    conn: Connection, account_id: str, campaign_id: str | None, page: Page
) -> list[Row[Any]]:
    """A page of the account's batches by `created_at` (then id), optionally one campaign's."""
    query = sa.select(batches).where(batches.c.account_id == account_id)
    if campaign_id is not None:
        query = query.where(batches.c.campaign_id == campaign_id)
    order = batches.c.created_at.asc() if page.ascending else batches.c.created_at.desc()
    return list(
        conn.execute(
            query.order_by(order, batches.c.id).offset(page.offset).limit(page.limit)
        ).all()
    )


def ensure_campaign(conn: Connection, account_id: str, campaign_id: str, now: datetime) -> None:
    """Create the campaign unless the account already has one by that id."""
    exists = conn.execute(
        sa.select(campaigns.c.campaign_id).where(
            campaigns.c.account_id == account_id, campaigns.c.campaign_id == campaign_id
        )
    ).first()
    if exists is None:
        conn.execute(
            sa.insert(campaigns).values(
                account_id=account_id, campaign_id=campaign_id, created_at=now
            )
        )


def insert_batch(conn: Connection, account_id: str, batch: NewBatch, now: datetime) -> None:
    """Insert a running batch with all its calls still to finish."""
    conn.execute(
        sa.insert(batches).values(
            id=batch.id,
            account_id=account_id,
            campaign_id=batch.campaign_id,
            label=batch.label,
            base_prompt=batch.base_prompt,
            call_params=batch.call_params,
            endpoint_code="api",
            status=BatchStatus.RUNNING,
            test_mode=batch.test_mode,
            rehearsal=batch.rehearsal,
            batch_webhook=batch.batch_webhook,
            total_calls=batch.total_calls,
            remaining=batch.total_calls,
            created_at=now,
        )
    )


def batch_numbers(conn: Connection, batch_id: str) -> dict[str, int]:
    """Each number already in the batch, with its row's position (`seq`)."""
    rows = conn.execute(
        sa.select(calls.c.to_number, calls.c.seq).where(calls.c.batch_id == batch_id)
    )
    return {r.to_number: r.seq for r in rows}


def add_calls(conn: Connection, account_id: str, batch_id: str, count: int) -> int | None:
    """Count `count` appended calls into a batch that is neither stopped nor complete.

    Returns the `seq` the first appended call takes (after every existing row), or
    None if the batch was stopped or completed meanwhile (nothing is changed then).
    """
    done = conn.execute(
        sa.update(batches)
        .where(
            batches.c.id == batch_id,
            batches.c.account_id == account_id,
            batches.c.status.notin_([BatchStatus.STOPPED, BatchStatus.COMPLETED]),
            batches.c.completed_at.is_(None),
            batches.c.remaining > 0,
        )
        .values(
            total_calls=batches.c.total_calls + count,
            remaining=batches.c.remaining + count,
        )
    )
    if done.rowcount != 1:
        return None
    last = conn.execute(sa.select(sa.func.max(calls.c.seq)).where(calls.c.batch_id == batch_id))
    top = last.scalar()
    return 0 if top is None else int(top) + 1


def mark_stopped(conn: Connection, account_id: str, batch_id: str, now: datetime) -> None:
    """A running or paused batch becomes stopped (a finished or stopped one stays as it is)."""
    res = conn.execute(
        sa.update(batches)
        .where(
            batches.c.id == batch_id,
            batches.c.account_id == account_id,
            batches.c.status.in_((BatchStatus.RUNNING, BatchStatus.PAUSED)),
        )
        .values(status=BatchStatus.STOPPED, stopped_at=now)
    )
    if res.rowcount == 1:
        payload = {"batch_id": batch_id, "status": BatchStatus.STOPPED.value, "at": now.isoformat()}
        append_batch_event(conn, account_id, batch_id, "batch.stopped", payload)


def expand_stored_call(
    conn: Connection, batch_id: str | None, task: str, params: Any, request_data: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A call's task, parameters and variables as submission rendered them.

    A batch call's row keeps only its own overrides and properties (its `task` is
    empty); the batch's prompt and shared fields, stored once on the batch, are
    merged back here. Anything else (a single call, a row written before batches
    kept their fields once) is returned as stored.
    """
    params = dict(params or {})
    variables = dict(request_data or {})
    if task or batch_id is None:
        return task, params, variables
    row = conn.execute(
        sa.select(batches.c.base_prompt, batches.c.call_params).where(batches.c.id == batch_id)
    ).first()
    if row is None:
        return task, params, variables
    return expand_call(row.base_prompt, row.call_params or {}, params, variables)


def move_batch(
    conn: Connection, account_id: str, batch_id: str, source: BatchStatus, target: BatchStatus
) -> str | None:
    """Move a batch from `source` to `target` if it is in `source`; its status after.

    One conditional UPDATE, so pausing a paused batch (or resuming a running one)
    changes nothing and answers the state it is in. None: the account has no such batch.
    A move that happened is a `batch.paused` / `batch.resumed` event in the same
    transaction; one that changed nothing adds none.
    """
    res = conn.execute(
        sa.update(batches)
        .where(
            batches.c.id == batch_id,
            batches.c.account_id == account_id,
            batches.c.status == source,
        )
        .values(status=target)
    )
    if res.rowcount == 1:
        kind = "batch.paused" if target == BatchStatus.PAUSED else "batch.resumed"
        now = utcnow()
        payload = {"batch_id": batch_id, "status": target.value, "at": now.isoformat()}
        append_batch_event(conn, account_id, batch_id, kind, payload)
    status = conn.execute(
        sa.select(batches.c.status).where(
            batches.c.id == batch_id, batches.c.account_id == account_id
        )
    ).scalar()
    return None if status is None else str(status)
