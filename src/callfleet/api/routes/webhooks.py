"""`/v1/webhooks`: the signing secret, and every delivery with its attempts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection

from callfleet.api.creating import read_json_object, respond_idempotently
from callfleet.api.deps import AccountDep, RuntimeDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.schemas import documented, json_body
from callfleet.api.schemas.webhooks import (
    MAX_PREVIOUS_SECRET_HOURS,
    DeliveryDetails,
    DeliveryList,
    RotateSecretRequest,
    WebhookSecret,
)
from callfleet.clock import utcnow
from callfleet.domain.errors import FieldError
from callfleet.store import deliveries
from callfleet.store.accounts import WebhookSecrets, rotate_webhook_secret, webhook_secrets
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


@router.get(
    "/secret",
    summary="The account's webhook signing secret",
    response_model=None,
    responses=documented(WebhookSecret, 400, 401),
)
def secret(runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        secrets = webhook_secrets(conn, account.id)
    return _secret(secrets.live(utcnow()))


def _secret(secrets: WebhookSecrets) -> dict[str, Any]:
    return {
        "status": "success",
        "secret": secrets.current,
        "scheme": "Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)",
        "previous_secret_expires_at": iso(secrets.previous_expires_at),
    }


@router.post(
    "/secret/rotate",
    summary="Rotate the webhook signing secret",
    description="Returns a new secret. Until `previous_secret_expires_at` (24 hours by "
    "default) deliveries carry two signatures, the new secret's and the old one's "
    "(`v1,<new> v1,<old>`), so receivers can switch over; then only the new one. "
    "Rotating again within that time drops the oldest secret at once.",
    response_model=None,
    responses=documented(WebhookSecret, 400, 401, 409, 422),
    openapi_extra=json_body(RotateSecretRequest, idempotent=True),
)
async def rotate_secret(request: Request, runtime: RuntimeDep, account: AccountDep) -> JSONResponse:
    raw, body = await read_json_object(request)
    hours = _previous_secret_hours(body, runtime.settings.webhook_secret_overlap_hours)
    overlap = timedelta(hours=hours)

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, _secret(rotate_webhook_secret(conn, account.id, utcnow(), overlap))

    def prepare(_read: Connection) -> Callable[[Connection], tuple[int, dict[str, Any]]]:
        return work  # nothing to read first: the rotation is one UPDATE

    return await respond_idempotently(runtime, account, request, raw, prepare)


def _previous_secret_hours(body: dict[str, Any], default: float) -> float:
    unknown = sorted(set(body) - set(RotateSecretRequest.model_fields))
    if unknown:
        hint = "Unknown field; the only one is previous_secret_hours."
        raise ApiError(
            400, f"Unknown fields: {', '.join(unknown)}.", [FieldError(k, hint) for k in unknown]
        )
    value = body.get("previous_secret_hours")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = "Must be a number of hours."
    elif not 0 <= value <= MAX_PREVIOUS_SECRET_HOURS:
        problem = f"Must be from 0 to {MAX_PREVIOUS_SECRET_HOURS} hours."
    else:
        return float(value)
    error = FieldError("previous_secret_hours", f"{problem} Got {value!r}.")
    raise ApiError(400, f"previous_secret_hours: {problem}", [error])


@router.get(
    "/deliveries",
    summary="List webhook deliveries",
    response_model=None,
    responses=documented(DeliveryList, 400, 401),
)
def list_deliveries(
    runtime: RuntimeDep,
    account: AccountDep,
    call_id: str | None = None,
    batch_id: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = deliveries.list_deliveries(
            conn,
            account.id,
            call_id=call_id,
            batch_id=batch_id,
            state=state,
            limit=max(1, min(limit, 1000)),
        )
    return {"status": "success", "deliveries": [_delivery(r) for r in rows]}


@router.get(
    "/deliveries/{delivery_id}",
    summary="One delivery with its attempts",
    response_model=None,
    responses=documented(DeliveryDetails, 400, 401, 404),
)
def get_delivery(delivery_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        row = owned(
            deliveries.get_delivery(conn, account.id, delivery_id), "webhook delivery", delivery_id
        )
        attempts = deliveries.delivery_attempts(conn, account.id, delivery_id)
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
