"""`/v1/webhooks`: the signing secret, and every delivery with its attempts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter

from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.store.tables import webhook_attempts, webhook_deliveries
from callfleet.store.views import iso

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "event": row.event,
        "url": row.url,
        "call_id": row.call_id,
        "batch_id": row.batch_id,
        "state": row.state,
        "attempts": row.attempts,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at),
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
    }


@router.get("/secret", summary="The account's webhook signing secret")
def secret(account: AccountDep) -> dict[str, Any]:
    return {
        "status": "success",
        "secret": account.webhook_secret,
        "scheme": "Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)",
    }


@router.get("/deliveries", summary="List webhook deliveries")
def list_deliveries(
    runtime: RuntimeDep,
    account: AccountDep,
    call_id: str | None = None,
    batch_id: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    where: list[Any] = [webhook_deliveries.c.account_id == account.id]
    if call_id is not None:
        where.append(webhook_deliveries.c.call_id == call_id)
    if batch_id is not None:
        where.append(webhook_deliveries.c.batch_id == batch_id)
    if state is not None:
        where.append(webhook_deliveries.c.state == state)
    with runtime.db.read() as conn:
        rows = conn.execute(
            sa.select(webhook_deliveries)
            .where(*where)
            .order_by(webhook_deliveries.c.created_at.desc())
            .limit(max(1, min(limit, 1000)))
        ).all()
    return {"status": "success", "deliveries": [_delivery(r) for r in rows]}


@router.get("/deliveries/{delivery_id}", summary="One delivery with its attempts")
def get_delivery(delivery_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        row = conn.execute(
            sa.select(webhook_deliveries).where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.account_id == account.id,
            )
        ).first()
        if row is None:
            raise ApiError(404, f"No webhook delivery {delivery_id!r} in this account.")
        attempts = conn.execute(
            sa.select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id == delivery_id)
            .order_by(webhook_attempts.c.attempt)
        ).all()
    out = _delivery(row)
    out["payload"] = row.payload
    out["attempt_log"] = [
        {
            "attempt": a.attempt,
            "at": iso(a.at),
            "status_code": a.status_code,
            "error": a.error,
            "duration_ms": a.duration_ms,
        }
        for a in attempts
    ]
    return {"status": "success", "delivery": out}
