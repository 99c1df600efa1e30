"""`/v1/numbers`: the caller IDs an account owns; a call's `from` must be one of them
(or `pool:NAME`, a pool of them). Each number shows its 7-day health; a paused one
is lifted with `POST /v1/numbers/{n}/resume`."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.api.schemas import documented, json_body
from callfleet.api.schemas.common import Success
from callfleet.api.schemas.numbers import (
    AddNumberRequest,
    NumberAdded,
    NumberDetails,
    NumberList,
)
from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import PhoneNumberError, normalize_phone
from callfleet.domain.urls import InvalidWebhookUrl, check_url_syntax
from callfleet.store import numbers as number_store
from callfleet.store.trunks import get_trunk

router = APIRouter(prefix="/v1/numbers", tags=["numbers"])


_POOL = re.compile(r"[A-Za-z0-9_-]{1,15}")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _number(row: Any, health: number_store.Health) -> dict[str, Any]:
    return {
        "id": row.id,
        "phone_number": row.phone_number,
        "label": row.label,
        "cps": row.cps,
        "trunk_id": row.trunk_id,
        "pool": row.pool,
        "webhook": row.webhook,
        "paused_at": _iso(row.paused_at),
        "paused_reason": row.paused_reason,
        "last_used_at": _iso(row.last_used_at),
        "health": health.to_json(),
        "created_at": row.created_at.isoformat(),
    }


def _with_health(conn: Any, row: Any, settings: Settings) -> dict[str, Any]:
    return _number(
        row, number_store.health(conn, row, utcnow(), settings.caller_id_min_answer_rate)
    )


def _check_extras(body: dict[str, Any], errors: list[FieldError]) -> None:
    """`pool` and `webhook`, appending what is wrong with them to `errors`."""
    pool = body.get("pool")
    if pool is not None and (not isinstance(pool, str) or not _POOL.fullmatch(pool)):
        errors.append(
            FieldError(
                "pool",
                'Must be a pool name of 1-15 letters, digits, "-" or "_", like "sales"; '
                'calls then use it as "from": "pool:sales".',
            )
        )
    hook = body.get("webhook")
    if hook is not None:
        try:
            if not isinstance(hook, str):
                raise InvalidWebhookUrl("Must be a URL string.")
            check_url_syntax(hook)
        except InvalidWebhookUrl as exc:
            errors.append(FieldError("webhook", str(exc)))


def _parse(raw: object, field: str = "phone_number") -> str:
    if raw is None or raw == "":
        raise ApiError(400, "phone_number is required.", [FieldError(field, "Required.")])
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ApiError(400, "phone_number must be a string.", [FieldError(field, "Not a string.")])
    try:
        return normalize_phone(raw)
    except PhoneNumberError as exc:
        raise ApiError(400, exc.reason, [FieldError(field, exc.reason)]) from None


@router.post(
    "",
    summary="Add a caller ID",
    response_model=None,
    responses=documented(NumberAdded, 400, 401, 409),
    openapi_extra=json_body(AddNumberRequest),
)
async def add_number(request: Request, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    number = _parse(body.get("phone_number"))
    label = body.get("label")
    cps = body.get("cps")
    errors = []
    if label is not None and not isinstance(label, str):
        errors.append(FieldError("label", "Must be a string."))
    elif label is not None and len(label) > 200:
        errors.append(FieldError("label", "`label` may be at most 200 characters."))
    if cps is not None and (
        isinstance(cps, bool) or not isinstance(cps, int | float) or not 0 < cps <= 1000
    ):
        errors.append(FieldError("cps", "Must be a number of calls per second, above 0."))
    trunk_id = body.get("trunk_id")
    if trunk_id is not None and not isinstance(trunk_id, str):
        errors.append(FieldError("trunk_id", "Must be a trunk id string from GET /v1/trunks."))
    _check_extras(body, errors)
    if errors:
        raise ApiError(400, errors[0].message, errors)
    try:
        with runtime.db.write() as conn:
            if trunk_id is not None and get_trunk(conn, account.id, trunk_id) is None:
                raise ApiError(
                    400,
                    f"No trunk {trunk_id!r} in this account; create one with POST /v1/trunks.",
                    [FieldError("trunk_id", "Unknown trunk.")],
                )
            row = number_store.add_number(
                conn,
                account.id,
                number,
                label,
                cps,
                trunk_id,
                utcnow(),
                pool=body.get("pool"),
                webhook=body.get("webhook"),
            )
            shown = _with_health(conn, row, runtime.settings)
    except IntegrityError:
        raise ApiError(409, f"{number} is already one of this account's numbers.") from None
    return {"status": "success", "message": "Number added.", "number": shown}


@router.get(
    "", summary="List caller IDs", response_model=None, responses=documented(NumberList, 400, 401)
)
def list_numbers(runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = number_store.list_numbers(conn, account.id)
        shown = [_with_health(conn, r, runtime.settings) for r in rows]
    return {"status": "success", "numbers": shown}


@router.get(
    "/{phone_number}",
    summary="One caller ID with its health",
    response_model=None,
    responses=documented(NumberDetails, 400, 401, 404),
)
def get_number(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse(phone_number)
    with runtime.db.read() as conn:
        row = number_store.get_number(conn, account.id, number)
        if row is None:
            raise ApiError(404, f"{number} is not one of this account's numbers.")
        shown = _with_health(conn, row, runtime.settings)
    return {"status": "success", "number": shown}


@router.post(
    "/{phone_number}/resume",
    summary="Lift a caller ID's pause",
    response_model=None,
    responses=documented(NumberDetails, 400, 401, 404),
)
def resume_number(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    """Calls may use the number again; its health figures start afresh from now."""
    number = _parse(phone_number)
    with runtime.db.write() as conn:
        if not number_store.resume_number(conn, account.id, number, utcnow()):
            raise ApiError(404, f"{number} is not one of this account's numbers.")
        row = number_store.get_number(conn, account.id, number)
        shown = _with_health(conn, row, runtime.settings)
    return {"status": "success", "number": shown}


@router.delete(
    "/{phone_number}",
    summary="Remove a caller ID",
    response_model=None,
    responses=documented(Success, 400, 401, 404),
)
def delete_number(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse(phone_number)
    with runtime.db.write() as conn:
        removed = number_store.remove_number(conn, account.id, number)
    if not removed:
        raise ApiError(404, f"{number} is not one of this account's numbers.")
    return {"status": "success", "message": f"{number} removed."}
