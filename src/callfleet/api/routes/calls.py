"""`/v1/calls`: send one call, list, read, stop (the recording: `recordings.py`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection

from callfleet.api.call_fields import CALL_FIELDS, check_fields
from callfleet.api.creating import Work, read_json_object, respond_idempotently
from callfleet.api.deps import AccountDep, PageDep, RuntimeDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.schemas import documented, json_body
from callfleet.api.schemas.calls import (
    CallDetails,
    CallList,
    SendCallRequest,
    SendCallResponse,
)
from callfleet.api.schemas.common import Success
from callfleet.api.submission import prepare_calls
from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.dispatch.lifecycle import cancel_queued
from callfleet.domain.errors import FieldError
from callfleet.domain.states import CALL_STATUS_FILTERS, CallState
from callfleet.store import calls as call_store
from callfleet.store.calls import CallFilter
from callfleet.store.views import call_details, call_summary

router = APIRouter(prefix="/v1/calls", tags=["calls"])


def _check_call(body: dict[str, Any]) -> dict[str, Any]:
    """The call's settings; a 400 naming every missing or invalid field."""
    errors: list[FieldError] = []
    if body.get("phone_number") in (None, ""):
        errors.append(FieldError("phone_number", "This field is required: who to call."))
    task = body.get("task")
    if not isinstance(task, str) or not task.strip():
        errors.append(
            FieldError("task", "This field is required: the agent's instructions (a string).")
        )
    candidates = {k: v for k, v in body.items() if k in CALL_FIELDS and k != "task"}
    fields, field_errors = check_fields(candidates)
    errors.extend(field_errors)
    if errors:
        raise ApiError(
            400, f"The call has invalid fields: {', '.join(e.field for e in errors)}.", errors
        )
    return fields


def _prepare_call(
    conn: Connection,
    account_id: str,
    settings: Settings,
    body: dict[str, Any],
    fields: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """The call's row, as a one-row batch would have it, and the warnings about its
    fields; a 400 if it cannot be dialled."""
    row = {k: v for k, v in body.items() if k not in CALL_FIELDS}
    row["phone_number"] = body["phone_number"]
    prepared = prepare_calls(
        conn,
        account_id=account_id,
        settings=settings,
        base_prompt=str(body["task"]),
        batch_fields=fields,
        rows=[row],
        now=utcnow(),
        batch_id=None,
    )
    if not prepared.rows:
        row_errors = [
            FieldError(
                e["field"].replace("call_data[0].", "").replace("call_data[0]", "task"),
                e["message"],
            )
            for e in prepared.rejected[0]["errors"]
        ]
        raise ApiError(400, row_errors[0].message, row_errors)
    return prepared.rows[0].values, prepared.field_warnings


def _create_call(
    conn: Connection, account_id: str, settings: Settings, body: dict[str, Any]
) -> Work:
    """Check and prepare (reading only); the Work writes the call."""
    fields = _check_call(body)
    values, field_warnings = _prepare_call(conn, account_id, settings, body, fields)
    unknown = sorted(k for k in body if k not in CALL_FIELDS and k != "phone_number")
    out = {
        "status": "success",
        "message": "Call successfully queued.",
        "call_id": values["id"],
        "batch_id": None,
        "scheduled_for": values["not_before"].isoformat(),
        "warnings": [
            f"`{k}` is not a Send Call field; it was kept in request_data." for k in unknown
        ]
        + field_warnings,
    }

    def write(conn: Connection) -> tuple[int, dict[str, Any]]:
        call_store.insert_calls(conn, account_id, [values])
        return 200, out

    return write


@router.post(
    "",
    summary="Send a call",
    responses=documented(SendCallResponse, 400, 401, 409, 422),
    openapi_extra=json_body(SendCallRequest, idempotent=True),
)
async def send_call(request: Request, runtime: RuntimeDep, account: AccountDep) -> JSONResponse:
    raw, body = await read_json_object(request)
    settings = runtime.settings

    def prepare(conn: Connection) -> Work:
        return _create_call(conn, account.id, settings, body)

    response = await respond_idempotently(runtime, account, request, raw, prepare)
    runtime.calls_queued()
    return response


@router.get("", summary="List calls", response_model=None, responses=documented(CallList, 400, 401))
def list_calls(
    runtime: RuntimeDep,
    account: AccountDep,
    page: PageDep,
    batch_id: str | None = None,
    campaign_id: str | None = None,
    to_number: str | None = None,
    from_number: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    completed: bool | None = None,
    answered_by: str | None = None,
    status: Annotated[
        str | None,
        Query(
            description="A call still in dispatch by its state (`queued`, `admitted`, "
            "`dialing`, `live`), or an ended call by its `status` (`completed`, `busy`, "
            "`no-answer`, `declined`, `failed`, `canceled`, `voicemail`)."
        ),
    ] = None,
) -> dict[str, Any]:
    if status is not None and status not in CALL_STATUS_FILTERS:
        raise ApiError(
            400,
            f"`status` must be one of {', '.join(CALL_STATUS_FILTERS)}; got {status!r}.",
            [FieldError("status", f"Unknown call status {status!r}.")],
        )
    wanted = CallFilter(
        batch_id=batch_id,
        campaign_id=campaign_id,
        to_number=to_number,
        from_number=from_number,
        start_date=None if start_date is None else _aware(start_date, "start_date"),
        end_date=None if end_date is None else _aware(end_date, "end_date"),
        completed=completed,
        answered_by=answered_by,
        status=status,
    )
    with runtime.db.read() as conn:
        total, rows = call_store.list_calls(conn, account.id, wanted, page)
    return {"status": "success", "count": total, "calls": [_listed(r) for r in rows]}


def _listed(row: Any) -> dict[str, Any]:
    """A call in a list: `createdAt` only, because the official SDK's model reads that key
    and a `created_at` beside it would replace its parsed datetime with the raw string."""
    out = call_summary(row)
    del out["created_at"]
    return out


def _aware(value: datetime, name: str) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ApiError(
            400,
            f"{name} is out of range.",
            [FieldError(f"query.{name}", "A date between the years 1 and 9999 in UTC.")],
        ) from None


@router.get(
    "/{call_id}",
    summary="Get a call's details",
    response_model=None,
    responses=documented(CallDetails, 400, 401, 404),
)
def get_call(call_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        owned(call_store.get_call(conn, account.id, call_id), "call", call_id, "/v1/calls")
        details = call_details(conn, call_id)
    assert details is not None
    return {k: v for k, v in details.items() if not k.startswith("_")}


@router.post(
    "/{call_id}/stop",
    summary="Stop a call",
    response_model=None,
    responses=documented(Success, 400, 401, 404),
)
def stop_call(call_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    now = utcnow()
    with runtime.db.write() as conn:
        row = owned(call_store.get_call(conn, account.id, call_id), "call", call_id, "/v1/calls")
        if row.state == CallState.ENDED:
            raise ApiError(
                400, f"This call has already ended (status {row.status}); there is nothing to stop."
            )
        cancelled = cancel_queued(
            conn, call_store.the_call(account.id, call_id), now, "Cancelled: the call was stopped."
        )
        live = not cancelled and call_store.request_hangup(conn, account.id, call_id)
    if live:
        runtime.hang_up([call_id])
    return {"status": "success", "message": "Call ended successfully."}
