"""`/v1/numbers`: the caller IDs an account owns; a call's `from` must be one of them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import PhoneNumberError, normalize_phone
from callfleet.store.ids import new_id, utcnow
from callfleet.store.tables import numbers, trunks

router = APIRouter(prefix="/v1/numbers", tags=["numbers"])


def _number(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "phone_number": row.phone_number,
        "label": row.label,
        "cps": row.cps,
        "trunk_id": row.trunk_id,
        "created_at": row.created_at.isoformat(),
    }


def _parse(raw: object, field: str = "phone_number") -> str:
    if raw is None or raw == "":
        raise ApiError(400, "phone_number is required.", [FieldError(field, "Required.")])
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ApiError(400, "phone_number must be a string.", [FieldError(field, "Not a string.")])
    try:
        return normalize_phone(raw)
    except PhoneNumberError as exc:
        raise ApiError(400, exc.reason, [FieldError(field, exc.reason)]) from None


@router.post("", summary="Add a caller ID")
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
    if errors:
        raise ApiError(400, errors[0].message, errors)
    row_id = new_id()
    try:
        with runtime.db.write() as conn:
            if trunk_id is not None:
                owned = conn.execute(
                    sa.select(trunks.c.id).where(
                        trunks.c.id == trunk_id, trunks.c.account_id == account.id
                    )
                ).first()
                if owned is None:
                    raise ApiError(
                        400,
                        f"No trunk {trunk_id!r} in this account; create one with POST /v1/trunks.",
                        [FieldError("trunk_id", "Unknown trunk.")],
                    )
            conn.execute(
                sa.insert(numbers).values(
                    id=row_id,
                    account_id=account.id,
                    phone_number=number,
                    label=label,
                    cps=cps,
                    trunk_id=trunk_id,
                    created_at=utcnow(),
                )
            )
            row = conn.execute(sa.select(numbers).where(numbers.c.id == row_id)).one()
    except IntegrityError:
        raise ApiError(409, f"{number} is already one of this account's numbers.") from None
    return {"status": "success", "message": "Number added.", "number": _number(row)}


@router.get("", summary="List caller IDs")
def list_numbers(runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = conn.execute(
            sa.select(numbers)
            .where(numbers.c.account_id == account.id)
            .order_by(numbers.c.created_at)
        ).all()
    return {"status": "success", "numbers": [_number(r) for r in rows]}


@router.delete("/{phone_number}", summary="Remove a caller ID")
def delete_number(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse(phone_number)
    with runtime.db.write() as conn:
        res = conn.execute(
            sa.delete(numbers).where(
                numbers.c.account_id == account.id, numbers.c.phone_number == number
            )
        )
    if res.rowcount == 0:
        raise ApiError(404, f"{number} is not one of this account's numbers.")
    return {"status": "success", "message": f"{number} removed."}
