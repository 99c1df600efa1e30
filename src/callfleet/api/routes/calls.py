"""`/v1/calls`: send one call, list, read, stop, recording."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.engine import Connection

from callfleet.api.call_fields import CALL_FIELDS, check_fields
from callfleet.api.creating import read_json_object, respond_idempotently
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.api.routes.batches import MAX_INDEX
from callfleet.api.submission import prepare_calls
from callfleet.dispatch.lifecycle import cancel_queued
from callfleet.domain.errors import FieldError
from callfleet.store.ids import utcnow
from callfleet.store.tables import batches, calls
from callfleet.store.views import call_details, call_summary

router = APIRouter(prefix="/v1/calls", tags=["calls"])


@router.post("", summary="Send a call")
async def send_call(request: Request, runtime: RuntimeDep, account: AccountDep) -> JSONResponse:
    raw, body = await read_json_object(request)
    settings = runtime.settings

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
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
        now = utcnow()
        row = {k: v for k, v in body.items() if k not in CALL_FIELDS}
        row["phone_number"] = body["phone_number"]
        prepared = prepare_calls(
            conn,
            account_id=account.id,
            settings=settings,
            base_prompt=str(task),
            batch_fields=fields,
            rows=[row],
            now=now,
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
        values = prepared.rows[0].values
        conn.execute(sa.insert(calls).values(**values))
        unknown = sorted(k for k in body if k not in CALL_FIELDS and k != "phone_number")
        return 200, {
            "status": "success",
            "message": "Call successfully queued.",
            "call_id": values["id"],
            "batch_id": None,
            "scheduled_for": values["not_before"].isoformat(),
            "warnings": [
                f"`{k}` is not a Send Call field; it was kept in request_data." for k in unknown
            ],
        }

    response = await respond_idempotently(runtime, account, request, raw, work)
    runtime.calls_queued()
    return response


@router.get("", summary="List calls")
def list_calls(
    runtime: RuntimeDep,
    account: AccountDep,
    batch_id: str | None = None,
    campaign_id: str | None = None,
    to_number: str | None = None,
    from_number: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    completed: bool | None = None,
    answered_by: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    from_: Annotated[int | None, Query(alias="from", ge=0, le=MAX_INDEX)] = None,
    to: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None,
    ascending: bool = False,
) -> dict[str, Any]:
    where: list[Any] = [calls.c.account_id == account.id]
    if batch_id is not None:
        where.append(calls.c.batch_id == batch_id)
    if campaign_id is not None:
        where.append(
            calls.c.batch_id.in_(
                sa.select(batches.c.id).where(
                    batches.c.account_id == account.id, batches.c.campaign_id == campaign_id
                )
            )
        )
    if to_number is not None:
        where.append(calls.c.to_number == to_number)
    if from_number is not None:
        where.append(calls.c.from_number == from_number)
    if start_date is not None:
        where.append(calls.c.created_at >= _aware(start_date, "start_date"))
    if end_date is not None:
        where.append(calls.c.created_at <= _aware(end_date, "end_date"))
    if completed is not None:
        where.append((calls.c.state == "ended") if completed else (calls.c.state != "ended"))
    if answered_by is not None:
        where.append(calls.c.answered_by == answered_by)
    order = calls.c.created_at.asc() if ascending else calls.c.created_at.desc()
    start = from_ or 0
    count = limit if to is None else max(0, min(limit, to - start))
    with runtime.db.read() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(calls).where(*where)).scalar()
        rows = conn.execute(
            sa.select(calls).where(*where).order_by(order, calls.c.seq).offset(start).limit(count)
        ).all()
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


def _owned_call(conn: Connection, account_id: str, call_id: str) -> Any:
    row = conn.execute(
        sa.select(calls).where(calls.c.id == call_id, calls.c.account_id == account_id)
    ).first()
    if row is None:
        raise ApiError(404, f"No call {call_id!r} in this account; list them with GET /v1/calls.")
    return row


@router.get("/{call_id}", summary="Get a call's details")
def get_call(call_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        _owned_call(conn, account.id, call_id)
        details = call_details(conn, call_id)
    assert details is not None
    return {k: v for k, v in details.items() if not k.startswith("_")}


@router.post("/{call_id}/stop", summary="Stop a call")
def stop_call(call_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    now = utcnow()
    with runtime.db.write() as conn:
        row = _owned_call(conn, account.id, call_id)
        if row.state == "ended":
            raise ApiError(
                400, f"This call has already ended (status {row.status}); there is nothing to stop."
            )
        cancelled = cancel_queued(
            conn, calls.c.id == call_id, now, "Cancelled: the call was stopped."
        )
        live = False
        if not cancelled:
            res = conn.execute(
                sa.update(calls)
                .where(calls.c.id == call_id, calls.c.state.in_(("dialing", "live")))
                .values(hangup_requested=True)
            )
            live = res.rowcount == 1
    if live:
        runtime.hang_up([call_id])
    return {"status": "success", "message": "Call ended successfully."}


@router.get("/{call_id}/recording", summary="Download a call's recording", response_model=None)
def get_recording(call_id: str, runtime: RuntimeDep, account: AccountDep) -> FileResponse:
    with runtime.db.read() as conn:
        row = _owned_call(conn, account.id, call_id)
    if not row.recording_path or not Path(row.recording_path).is_file():
        reason = (
            "recording was not requested (send `record: true`)"
            if not row.record
            else "the call has no recording (it was not answered, or has not ended yet)"
        )
        raise ApiError(404, f"No recording for this call: {reason}.")
    return FileResponse(row.recording_path, media_type="audio/wav")
