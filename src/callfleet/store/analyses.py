"""Stored answers of `POST .../analyze`. Every function takes the account's id first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.store.tables import call_analyses

__all__ = ["add_analysis", "batch_analyses"]


def add_analysis(
    conn: Connection,
    account_id: str,
    call_id: str,
    batch_id: str | None,
    goal: str | None,
    questions: list[list[str]],
    answers: list[Any],
    now: datetime,
) -> None:
    conn.execute(
        sa.insert(call_analyses).values(
            account_id=account_id,
            call_id=call_id,
            batch_id=batch_id,
            goal=goal,
            questions=questions,
            answers=answers,
            created_at=now,
        )
    )


def batch_analyses(conn: Connection, account_id: str, batch_id: str) -> list[Row[Any]]:
    """Every analysis stored for the batch's calls, oldest first."""
    return list(
        conn.execute(
            sa.select(call_analyses)
            .where(call_analyses.c.batch_id == batch_id, call_analyses.c.account_id == account_id)
            .order_by(call_analyses.c.id)
        ).all()
    )
