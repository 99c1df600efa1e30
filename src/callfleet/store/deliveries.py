"""What the API reads of an account's webhook deliveries; each function takes the account first.

Writing deliveries and their attempts is the webhook sender's work
(`callfleet.webhooks.outbox`); this module only answers `GET /v1/webhooks/deliveries`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.store.tables import webhook_attempts, webhook_deliveries

__all__ = ["delivery_attempts", "get_delivery", "list_deliveries"]


def list_deliveries(
    conn: Connection,
    account_id: str,
    *,
    call_id: str | None,
    batch_id: str | None,
    state: str | None,
    limit: int,
) -> list[Row[Any]]:
    """The account's newest deliveries, optionally one call's, one batch's or in one state."""
    where: list[Any] = [webhook_deliveries.c.account_id == account_id]
    if call_id is not None:
        where.append(webhook_deliveries.c.call_id == call_id)
    if batch_id is not None:
        where.append(webhook_deliveries.c.batch_id == batch_id)
    if state is not None:
        where.append(webhook_deliveries.c.state == state)
    return list(
        conn.execute(
            sa.select(webhook_deliveries)
            .where(*where)
            .order_by(webhook_deliveries.c.created_at.desc())
            .limit(limit)
        ).all()
    )


def get_delivery(conn: Connection, account_id: str, delivery_id: str) -> Row[Any] | None:
    return conn.execute(
        sa.select(webhook_deliveries).where(
            webhook_deliveries.c.id == delivery_id,
            webhook_deliveries.c.account_id == account_id,
        )
    ).first()


def delivery_attempts(conn: Connection, account_id: str, delivery_id: str) -> list[Row[Any]]:
    """The delivery's attempts in order (none if it is not the account's)."""
    return list(
        conn.execute(
            sa.select(webhook_attempts)
            .join(webhook_deliveries, webhook_deliveries.c.id == webhook_attempts.c.delivery_id)
            .where(
                webhook_attempts.c.delivery_id == delivery_id,
                webhook_deliveries.c.account_id == account_id,
            )
            .order_by(webhook_attempts.c.attempt)
        ).all()
    )
