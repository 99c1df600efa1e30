"""`/v1/dnc`: the account's do-not-call list, checked at submission and at dial time."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request

from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import PhoneNumberError, normalize_phone
from callfleet.store.ids import utcnow
from callfleet.store.tables import dnc

router = APIRouter(prefix="/v1/dnc", tags=["do-not-call"])


def _entry(row: Any) -> dict[str, Any]:
    return {
        "phone_number": row.phone_number,
        "reason": row.reason,
        "source": row.source,
        "created_at": row.created_at.isoformat(),
    }


@router.post("", summary="Add numbers to the do-not-call list")
async def add(request: Request, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    raw_numbers: list[Any]
    if "phone_numbers" in body:
        if not isinstance(body["phone_numbers"], list) or not body["phone_numbers"]:
            raise ApiError(
                400,
                "phone_numbers must be a non-empty array.",
                [FieldError("phone_numbers", "Must be a non-empty array of phone numbers.")],
            )
        raw_numbers, prefix = body["phone_numbers"], "phone_numbers"
    elif "phone_number" in body:
        raw_numbers, prefix = [body["phone_number"]], ""
    else:
        raise ApiError(
            400,
            "Send `phone_number` (one) or `phone_numbers` (several).",
            [FieldError("phone_number", "Required.")],
        )
    reason = body.get("reason")
    errors: list[FieldError] = []
    if reason is not None and not isinstance(reason, str):
        errors.append(FieldError("reason", "Must be a string."))
    elif reason is not None and len(reason) > 500:
        errors.append(FieldError("reason", "`reason` may be at most 500 characters."))
    parsed: list[str] = []
    for i, raw in enumerate(raw_numbers):
        field = f"{prefix}[{i}]" if prefix else "phone_number"
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            errors.append(FieldError(field, "Must be a phone number string."))
            continue
        try:
            parsed.append(normalize_phone(raw))
        except PhoneNumberError as exc:
            errors.append(FieldError(field, exc.reason))
    if errors:
        raise ApiError(400, "Nothing was added: " + errors[0].message, errors)
    now = utcnow()
    added = 0
    with runtime.db.write() as conn:
        for number in dict.fromkeys(parsed):
            exists = conn.execute(
                sa.select(dnc.c.phone_number).where(
                    dnc.c.account_id == account.id, dnc.c.phone_number == number
                )
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(dnc).values(
                        account_id=account.id,
                        phone_number=number,
                        reason=reason,
                        source="api",
                        created_at=now,
                    )
                )
                added += 1
    return {
        "status": "success",
        "message": f"{added} numbers added ({len(parsed) - added} were already on the list).",
        "added": added,
        "phone_numbers": list(dict.fromkeys(parsed)),
    }


@router.get("", summary="List the do-not-call list")
def list_entries(
    runtime: RuntimeDep, account: AccountDep, limit: int = 1000, offset: int = 0
) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = conn.execute(
            sa.select(dnc)
            .where(dnc.c.account_id == account.id)
            .order_by(dnc.c.created_at, dnc.c.phone_number)
            .offset(min(max(0, offset), 10**12))
            .limit(max(1, min(limit, 10_000)))
        ).all()
    return {"status": "success", "entries": [_entry(r) for r in rows]}


def _parse_path(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except PhoneNumberError as exc:
        raise ApiError(400, exc.reason, [FieldError("phone_number", exc.reason)]) from None


@router.get("/{phone_number}", summary="Check a number")
def check(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse_path(phone_number)
    with runtime.db.read() as conn:
        row = conn.execute(
            sa.select(dnc).where(dnc.c.account_id == account.id, dnc.c.phone_number == number)
        ).first()
    return {
        "status": "success",
        "phone_number": number,
        "on_list": row is not None,
        "entry": _entry(row) if row is not None else None,
    }


@router.delete("/{phone_number}", summary="Remove a number from the list")
def remove(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse_path(phone_number)
    with runtime.db.write() as conn:
        res = conn.execute(
            sa.delete(dnc).where(dnc.c.account_id == account.id, dnc.c.phone_number == number)
        )
    if res.rowcount == 0:
        raise ApiError(404, f"{number} is not on this account's do-not-call list.")
    return {"status": "success", "message": f"{number} removed from the do-not-call list."}
