"""`/v1/dnc`: the account's do-not-call list, checked at submission and at dial time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from callfleet.api.creating import read_json_object
from callfleet.api.csv_upload import CsvBody, is_multipart, read_csv_body
from callfleet.api.deps import MAX_INDEX, AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.api.schemas import documented
from callfleet.api.schemas.batches import json_or_csv_body
from callfleet.api.schemas.common import Success
from callfleet.api.schemas.dnc import DncAdded, DncAddForm, DncAddRequest, DncCheck, DncList
from callfleet.clock import utcnow
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import PhoneNumberError, normalize_phone
from callfleet.store import dnc as dnc_store

router = APIRouter(prefix="/v1/dnc", tags=["do-not-call"])


def _entry(row: Any) -> dict[str, Any]:
    return {
        "phone_number": row.phone_number,
        "reason": row.reason,
        "source": row.source,
        "call_id": row.call_id,
        "created_at": row.created_at.isoformat(),
    }


@router.post(
    "",
    summary="Add numbers to the do-not-call list",
    response_model=None,
    description="JSON (`phone_number` or `phone_numbers`: nothing is added if any number "
    "is bad), or `multipart/form-data` with a CSV `file` of numbers: the good rows are "
    "added and each bad row is listed in `rejected` with its CSV line (a do-not-call list "
    "is safer with the good numbers on it than with none).",
    responses=documented(DncAdded, 400, 401, 413),
    openapi_extra=json_or_csv_body(DncAddRequest, DncAddForm),
)
async def add(request: Request, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    if is_multipart(request):
        upload = await read_csv_body(
            request, batch_required=False, max_rows=runtime.settings.max_batch_rows
        )
        return _add_csv(runtime, account.id, upload)
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
    with runtime.db.write() as conn:
        added = dnc_store.add_numbers(conn, account.id, dict.fromkeys(parsed), reason, "api", now)
    return {
        "status": "success",
        "message": f"{added} numbers added ({len(parsed) - added} were already on the list).",
        "added": added,
        "phone_numbers": list(dict.fromkeys(parsed)),
    }


def _reason(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be a string.", [FieldError(where, "Must be a string.")])
    if len(value) > 500:
        raise ApiError(
            400,
            f"{where} may be at most 500 characters.",
            [FieldError(where, f"At most 500 characters, got {len(value)}.")],
        )
    return value


def _reason_cell(row: dict[str, Any]) -> Any:
    """The row's `reason` column (any case, spaces around ignored), if the CSV has one."""
    for name, value in row.items():
        if name.strip().lower() == "reason":
            return value
    return None


def _add_csv(runtime: Any, account_id: str, upload: CsvBody) -> dict[str, Any]:
    """Add a CSV's numbers; each bad row is reported by its line, the rest are added."""
    body = upload.body
    unknown = sorted(k for k in body if k not in ("call_data", "reason"))
    if unknown:
        raise ApiError(
            400,
            f"`batch` may hold only `phone_column` and `reason`; remove {', '.join(unknown)}.",
            [FieldError(f"batch.{k}", "Not a field of a do-not-call upload.") for k in unknown],
        )
    default_reason = _reason(body.get("reason"), "batch.reason")
    by_reason: dict[str | None, dict[str, None]] = {}
    rejected: list[dict[str, Any]] = []
    for index, row in enumerate(body["call_data"]):
        line = upload.lines[index] if index < len(upload.lines) else None
        raw = row.get("phone_number")
        try:
            number = normalize_phone(raw)
            reason = _reason(_reason_cell(row), "reason") or default_reason
        except (PhoneNumberError, ApiError) as exc:
            why = exc.reason if isinstance(exc, PhoneNumberError) else exc.message
            rejected.append(
                {
                    "index": index,
                    "line": line,
                    "phone_number": raw,
                    "errors": [{"field": "phone_number", "message": f"{why} (CSV line {line})"}],
                }
            )
            continue
        by_reason.setdefault(reason, {})[number] = None
    numbers = [n for found in by_reason.values() for n in found]
    if not numbers:
        raise ApiError(
            400,
            f"None of the CSV's {len(body['call_data'])} rows holds a valid phone number; "
            "nothing was added.",
            [FieldError(f"file line {r['line']}", r["errors"][0]["message"]) for r in rejected],
        )
    now = utcnow()
    with runtime.db.write() as conn:
        added = sum(
            dnc_store.add_numbers(conn, account_id, found, reason, "api", now)
            for reason, found in by_reason.items()
        )
    unique = list(dict.fromkeys(numbers))
    return {
        "status": "success",
        "message": f"{added} numbers added ({len(unique) - added} were already on the list, "
        f"{len(rejected)} rows were not numbers).",
        "added": added,
        "phone_numbers": unique,
        "rejected": rejected,
    }


@router.get(
    "",
    summary="List the do-not-call list",
    response_model=None,
    responses=documented(DncList, 400, 401),
)
def list_entries(
    runtime: RuntimeDep, account: AccountDep, limit: int = 1000, offset: int = 0
) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = dnc_store.list_entries(
            conn, account.id, min(max(0, offset), MAX_INDEX), max(1, min(limit, 10_000))
        )
    return {"status": "success", "entries": [_entry(r) for r in rows]}


def _parse_path(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except PhoneNumberError as exc:
        raise ApiError(400, exc.reason, [FieldError("phone_number", exc.reason)]) from None


@router.get(
    "/{phone_number}",
    summary="Check a number",
    response_model=None,
    responses=documented(DncCheck, 400, 401),
)
def check(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse_path(phone_number)
    with runtime.db.read() as conn:
        row = dnc_store.get_entry(conn, account.id, number)
    return {
        "status": "success",
        "phone_number": number,
        "on_list": row is not None,
        "entry": _entry(row) if row is not None else None,
    }


@router.delete(
    "/{phone_number}",
    summary="Remove a number from the list",
    response_model=None,
    responses=documented(Success, 400, 401, 404),
)
def remove(phone_number: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    number = _parse_path(phone_number)
    with runtime.db.write() as conn:
        removed = dnc_store.remove_number(conn, account.id, number)
    if not removed:
        raise ApiError(404, f"{number} is not on this account's do-not-call list.")
    return {"status": "success", "message": f"{number} removed from the do-not-call list."}
