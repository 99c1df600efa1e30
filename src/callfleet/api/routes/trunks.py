"""`/v1/trunks`: the SIP trunks an account calls through. Passwords are write-only."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.schemas import documented, json_body
from callfleet.api.schemas.common import Success
from callfleet.api.schemas.trunks import AddTrunkRequest, TrunkAdded, TrunkList, TrunkResponse
from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.domain.errors import FieldError
from callfleet.domain.hosts import credential_problem, host_problem, hostname_problem
from callfleet.net.trunks import TrunkPolicy, TrunkRefused, TrunkUnresolvable, resolve_trunk
from callfleet.store import trunks as trunk_store
from callfleet.store.ids import new_id
from callfleet.store.numbers import numbers_on_trunk
from callfleet.store.secrets import SecretBox
from callfleet.store.trunks import NewTrunk
from callfleet.store.views import iso

router = APIRouter(prefix="/v1/trunks", tags=["trunks"])
log = structlog.get_logger(__name__)

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
    _check_syntax(body, errors)
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


_SYNTAX = {
    "host": host_problem,
    "from_domain": hostname_problem,
    "username": credential_problem,
    "password": credential_problem,
}
"""Each field a SIP header carries, and its check (`callfleet.domain.hosts`)."""


def _check_syntax(body: dict[str, Any], errors: list[FieldError]) -> None:
    """Add an error for each trunk field that is a string but could break a SIP header."""
    seen = {e.field for e in errors}
    for name, problem_of in _SYNTAX.items():
        value = body.get(name)
        if name in seen or not isinstance(value, str):
            continue
        problem = problem_of(value)
        if problem is not None:
            errors.append(FieldError(name, problem))


async def _check_destination(host: str, port: int, settings: Settings) -> list[str]:
    """Refuse (400 on `host`) a trunk whose host resolves to an address the operator's
    policy refuses; the same check runs again at every dial. A host that does not
    resolve yet is accepted with a warning (DNS may be set up after the trunk)."""
    try:
        await resolve_trunk(host, port, TrunkPolicy.from_settings(settings))
    except TrunkRefused as exc:
        log.warning("trunk refused by the address policy", host=host, reason=exc.reason)
        raise ApiError(
            400, "The trunk has invalid fields: host.", [FieldError("host", str(exc))]
        ) from None
    except TrunkUnresolvable:
        return [
            f"The host {host!r} does not resolve to an IPv4 address now; calls through this "
            "trunk fail until it does (it is checked again at every dial)."
        ]
    return []


@router.post(
    "",
    summary="Add a SIP trunk",
    response_model=None,
    responses=documented(TrunkAdded, 400, 401, 409),
    openapi_extra=json_body(AddTrunkRequest),
)
async def add_trunk(request: Request, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    errors = _check(body)
    if errors:
        raise ApiError(
            400, f"The trunk has invalid fields: {', '.join(e.field for e in errors)}.", errors
        )
    warnings = await _check_destination(body["host"], body.get("port", 5060), runtime.settings)
    box = SecretBox.from_settings(runtime.settings)
    password = body.get("password")
    trunk = NewTrunk(
        id=new_id(),
        name=body["name"],
        host=body["host"],
        port=body.get("port", 5060),
        transport=body.get("transport", "udp"),
        username=body.get("username"),
        password_enc=box.encrypt(password) if password else None,
        from_domain=body.get("from_domain"),
        cps=float(body.get("cps", 1)),
        is_default=bool(body.get("default", False)),
    )
    try:
        with runtime.db.write() as conn:
            row = trunk_store.add_trunk(conn, account.id, trunk, utcnow())
    except IntegrityError:
        raise ApiError(409, f"This account already has a trunk named {body['name']!r}.") from None
    unknown = sorted(set(body) - _FIELDS)
    return {
        "status": "success",
        "message": "Trunk added.",
        "trunk": trunk_view(row),
        "warnings": warnings + [f"Unknown field `{k}` was ignored." for k in unknown],
    }


@router.get(
    "", summary="List SIP trunks", response_model=None, responses=documented(TrunkList, 400, 401)
)
def list_trunks(runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = trunk_store.list_trunks(conn, account.id)
    return {"status": "success", "trunks": [trunk_view(r) for r in rows]}


@router.get(
    "/{trunk_id}",
    summary="One SIP trunk",
    response_model=None,
    responses=documented(TrunkResponse, 400, 401, 404),
)
def get_trunk(trunk_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        row = trunk_store.get_trunk(conn, account.id, trunk_id)
    row = owned(row, "trunk", trunk_id, "/v1/trunks")
    return {"status": "success", "trunk": trunk_view(row)}


@router.delete(
    "/{trunk_id}",
    summary="Remove a SIP trunk",
    response_model=None,
    responses=documented(Success, 400, 401, 404, 409),
)
def delete_trunk(trunk_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.write() as conn:
        bound = numbers_on_trunk(conn, account.id, trunk_id)
        if bound:
            listed = ", ".join(bound[:5])
            raise ApiError(
                409,
                f"Numbers still call through this trunk ({listed}); delete them or bind them "
                "to another trunk first.",
            )
        deleted = trunk_store.delete_trunk(conn, account.id, trunk_id)
    if not deleted:
        raise ApiError(404, f"No trunk {trunk_id!r} in this account.")
    return {"status": "success", "message": "Trunk removed."}
