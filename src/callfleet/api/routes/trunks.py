"""`/v1/trunks`: the SIP trunks an account calls through. Passwords are write-only."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.domain.errors import FieldError
from callfleet.store.ids import new_id, utcnow
from callfleet.store.secrets import SecretBox
from callfleet.store.tables import numbers, trunks
from callfleet.store.views import iso

router = APIRouter(prefix="/v1/trunks", tags=["trunks"])

_FIELDS = {
    "name",
    "host",
    "port",
    "transport",
    "username",
    "password",
    "from_domain",
    "cps",
    "default",
}


def trunk_view(row: Any) -> dict[str, Any]:
    return {
        "trunk_id": row.id,
        "name": row.name,
        "host": row.host,
        "port": row.port,
        "transport": row.transport,
        "username": row.username,
        "has_password": row.password_enc is not None,
        "from_domain": row.from_domain,
        "cps": row.cps,
        "default": row.is_default,
        "created_at": iso(row.created_at),
    }


def _check(body: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []

    def text(name: str, required: bool = False, limit: int = 255) -> None:
        value = body.get(name)
        if value is None:
            if required:
                errors.append(FieldError(name, "This field is required."))
        elif not isinstance(value, str) or not value.strip() or len(value) > limit:
            errors.append(FieldError(name, f"Must be a non-empty string of at most {limit} chars."))

    text("name", required=True, limit=200)
    text("host", required=True)
    text("username")
    text("password")
    text("from_domain")
    port = body.get("port", 5060)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        errors.append(FieldError("port", "Must be a port number from 1 to 65535."))
    if body.get("transport", "udp") not in ("udp", "tcp"):
        errors.append(FieldError("transport", "Must be 'udp' or 'tcp'."))
    cps = body.get("cps", 1)
    if isinstance(cps, bool) or not isinstance(cps, int | float) or not 0 < cps <= 1000:
        errors.append(
            FieldError("cps", "Must be calls per second above 0 (carriers often allow 1).")
        )
    if not isinstance(body.get("default", False), bool):
        errors.append(FieldError("default", "Must be true or false."))
    if (body.get("password") is None) != (body.get("username") is None):
        errors.append(FieldError("password", "Send username and password together, or neither."))
    return errors


@router.post("", summary="Add a SIP trunk")
async def add_trunk(request: Request, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    errors = _check(body)
    if errors:
        raise ApiError(
            400, f"The trunk has invalid fields: {', '.join(e.field for e in errors)}.", errors
        )
    box = SecretBox.from_settings(runtime.settings)
    trunk_id = new_id()
    password = body.get("password")
    try:
        with runtime.db.write() as conn:
            if body.get("default"):
                conn.execute(
                    sa.update(trunks)
                    .where(trunks.c.account_id == account.id)
                    .values(is_default=False)
                )
            conn.execute(
                sa.insert(trunks).values(
                    id=trunk_id,
                    account_id=account.id,
                    name=body["name"],
                    host=body["host"],
                    port=body.get("port", 5060),
                    transport=body.get("transport", "udp"),
                    username=body.get("username"),
                    password_enc=box.encrypt(password) if password else None,
                    from_domain=body.get("from_domain"),
                    cps=float(body.get("cps", 1)),
                    is_default=bool(body.get("default", False)),
                    created_at=utcnow(),
                )
            )
            row = conn.execute(sa.select(trunks).where(trunks.c.id == trunk_id)).one()
    except IntegrityError:
        raise ApiError(409, f"This account already has a trunk named {body['name']!r}.") from None
    unknown = sorted(set(body) - _FIELDS)
    return {
        "status": "success",
        "message": "Trunk added.",
        "trunk": trunk_view(row),
        "warnings": [f"Unknown field `{k}` was ignored." for k in unknown],
    }


@router.get("", summary="List SIP trunks")
def list_trunks(runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = conn.execute(
            sa.select(trunks).where(trunks.c.account_id == account.id).order_by(trunks.c.created_at)
        ).all()
    return {"status": "success", "trunks": [trunk_view(r) for r in rows]}


@router.get("/{trunk_id}", summary="One SIP trunk")
def get_trunk(trunk_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        row = conn.execute(
            sa.select(trunks).where(trunks.c.id == trunk_id, trunks.c.account_id == account.id)
        ).first()
    if row is None:
        raise ApiError(
            404, f"No trunk {trunk_id!r} in this account; list them with GET /v1/trunks."
        )
    return {"status": "success", "trunk": trunk_view(row)}


@router.delete("/{trunk_id}", summary="Remove a SIP trunk")
def delete_trunk(trunk_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.write() as conn:
        bound = conn.execute(
            sa.select(numbers.c.phone_number).where(
                numbers.c.trunk_id == trunk_id, numbers.c.account_id == account.id
            )
        ).all()
        if bound:
            listed = ", ".join(r[0] for r in bound[:5])
            raise ApiError(
                409,
                f"Numbers still call through this trunk ({listed}); delete them or bind them "
                "to another trunk first.",
            )
        res = conn.execute(
            sa.delete(trunks).where(trunks.c.id == trunk_id, trunks.c.account_id == account.id)
        )
    if res.rowcount == 0:
        raise ApiError(404, f"No trunk {trunk_id!r} in this account.")
    return {"status": "success", "message": "Trunk removed."}
