"""The outbox: a delivery is a row written in the same transaction as the event.

If the transaction that ends a call commits, its webhook will be sent; if it rolls
back, no webhook exists for an event that did not happen. The sender
(`webhooks.sender`) picks rows up from here.

A call's webhook (`enqueue_call_webhook`) carries its details object as they stand
when the row is written. A call that has post-call work to do (summary, analysis,
disposition) gets it from the transaction that records that work, not from the one
that ends the call, so the webhook always carries the summary or says it failed.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.store.ids import new_id
from callfleet.store.tables import webhook_deliveries
from callfleet.store.views import call_details

__all__ = ["DeliveryState", "enqueue_call_webhook", "enqueue_delivery"]


class DeliveryState(enum.StrEnum):
    """A delivery's `state`: pending until the receiver takes it or retries run out."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def enqueue_delivery(
    conn: Connection,
    *,
    account_id: str,
    event: str,
    url: str,
    payload: dict[str, Any],
    call_id: str | None,
    batch_id: str | None,
    now: datetime,
) -> str:
    """Record a delivery to make; returns its id (also the `webhook-id` header)."""
    delivery_id = new_id()
    conn.execute(
        sa.insert(webhook_deliveries).values(
            id=delivery_id,
            account_id=account_id,
            event=event,
            url=url,
            payload=payload,
            call_id=call_id,
            batch_id=batch_id,
            state=DeliveryState.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return delivery_id


def enqueue_call_webhook(
    conn: Connection, call_id: str, url: str, batch_id: str | None, now: datetime
) -> str:
    """Record the call's `call.completed` delivery: its details object as it is now."""
    details = call_details(conn, call_id)
    assert details is not None, f"no call {call_id}"
    return enqueue_delivery(
        conn,
        account_id=str(details["_account_id"]),
        event="call.completed",
        url=url,
        payload={k: v for k, v in details.items() if not k.startswith("_")},
        call_id=call_id,
        batch_id=batch_id,
        now=now,
    )
