"""`/v1/batches`: send a batch (the seed), list, read, stop, analyze."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.engine import Connection

from callfleet.api.call_fields import CALL_FIELDS, check_fields
from callfleet.api.creating import Work, read_json_object, respond_idempotently
from callfleet.api.csv_upload import is_multipart, read_csv_body, with_lines, work_with_lines
from callfleet.api.deps import MAX_INDEX, AccountDep, PageDep, RuntimeDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.export import export_columns, export_lines
from callfleet.api.schemas import documented
from callfleet.api.schemas.batches import (
    AppendCallsForm,
    AppendCallsRequest,
    AppendCallsResponse,
    BatchDetails,
    BatchList,
    BatchStateResponse,
    SendBatchForm,
    SendBatchRequest,
    SendBatchResponse,
    StopBatchResponse,
    StoredAnalyses,
    json_or_csv_body,
)
from callfleet.api.submission import (
    BATCH_FIELDS,
    CallRow,
    PreparedCalls,
    check_batch_shape,
    prepare_calls,
    rehearsal_calls,
    rehearsal_warnings,
)
from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.dispatch.lifecycle import cancel_queued
from callfleet.domain.errors import FieldError
from callfleet.domain.states import BatchStatus
from callfleet.store import batches as batch_store
from callfleet.store import calls as call_store
from callfleet.store.analyses import batch_analyses
from callfleet.store.batches import NewBatch
from callfleet.store.ids import new_id
from callfleet.store.views import batch_details as batch_details_view
from callfleet.store.views import batch_object, iso

router = APIRouter(prefix="/v1/batches", tags=["batches"])

IGNORED_AT_BATCH_LEVEL = {
    "task": "`task` is ignored in a batch: `base_prompt` is the task of every call.",
    "phone_number": "A top-level `phone_number` is ignored in a batch: each call_data row "
    "has its own.",
}


def _batch_fields(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    for name, text in IGNORED_AT_BATCH_LEVEL.items():
        if body.get(name) is not None:
            warnings.append(text)
    unknown = sorted(
        k
        for k in body
        if k not in BATCH_FIELDS and k not in CALL_FIELDS and k not in IGNORED_AT_BATCH_LEVEL
    )
    warnings.extend(f"Unknown field `{k}` was ignored." for k in unknown)
    candidates = {
        k: v for k, v in body.items() if k in CALL_FIELDS and k not in IGNORED_AT_BATCH_LEVEL
    }
    fields, errors = check_fields(candidates)
    if errors:
        raise ApiError(
            400,
            f"The batch has invalid call settings: {', '.join(e.field for e in errors[:5])}.",
            errors,
        )
    return fields, warnings


def _schedule(prepared: PreparedCalls, now: datetime) -> dict[str, Any]:
    waiting = [r.values["not_before"] for r in prepared.rows if r.values["not_before"] > now]
    return {
        "dial_now": len(prepared.rows) - len(waiting),
        "waiting_for_window_or_start_time": len(waiting),
        "next_dial_at": iso(min(waiting)) if waiting else None,
    }


def _rejection_errors(prepared: PreparedCalls) -> list[FieldError]:
    return [
        FieldError(err["field"], err["message"])
        for row in prepared.rejected
        for err in row["errors"]
    ]


def _check_shape(body: dict[str, Any], settings: Settings) -> None:
    shape_errors = check_batch_shape(body, settings)
    if shape_errors:
        raise ApiError(
            400,
            "The batch is not in the expected shape: "
            f"{'; '.join(f'{e.field}: {e.message}' for e in shape_errors[:3])}",
            shape_errors,
        )


def _prepare(
    conn: Connection,
    account_id: str,
    settings: Settings,
    body: dict[str, Any],
    now: datetime,
    batch_id: str,
) -> tuple[dict[str, Any], PreparedCalls]:
    """The batch's call settings and its checked rows; a 400 if no row can be dialled."""
    fields, warnings = _batch_fields(body)
    prepared = prepare_calls(
        conn,
        account_id=account_id,
        settings=settings,
        base_prompt=body["base_prompt"],
        batch_fields=fields,
        rows=body["call_data"],
        now=now,
        batch_id=batch_id,
    )
    prepared.warnings = warnings + prepared.warnings
    if not prepared.rows:
        raise ApiError(
            400,
            f"None of the {len(body['call_data'])} calls can be dialled; see `errors` "
            "for each row's reason.",
            _rejection_errors(prepared),
        )
    return fields, prepared


def _validation(body: dict[str, Any], prepared: PreparedCalls) -> dict[str, Any]:
    """Every row's verdict, in input order (`test_mode`'s and a dry run's report)."""
    report = [
        {
            "index": r.index,
            "phone_number": r.values["to_number"],
            "valid": True,
            "errors": [],
        }
        for r in prepared.rows
    ] + [{**r, "valid": False} for r in prepared.rejected]
    report.sort(key=lambda entry: int(entry["index"]))
    return {
        "rows": len(body["call_data"]),
        "valid": len(prepared.rows),
        "rejected": prepared.rejected,
        "report": report,
    }


def _test_report(
    body: dict[str, Any], prepared: PreparedCalls, rows: list[CallRow]
) -> dict[str, Any]:
    """What `test_mode` shows: the one call it dispatches and every row's validation."""
    first = rows[0].values
    return {
        "dispatched_row": rows[0].index,
        "rendered_prompt": prepared.first[0] if prepared.first else first["task"],
        "parameters": prepared.first[1] if prepared.first else first["params"],
        "to": first["to_number"],
        "from": first["from_number"],
        "scheduled_for": iso(first["not_before"]),
        "validation": _validation(body, prepared),
        "warnings": prepared.warnings,
    }


def _rehearsal_rows(rows: list[CallRow]) -> dict[str, Any]:
    """Which row each rehearsal call stands in for, and the persona it dials."""
    return {"rows": [dict(r.values["rehearsal_of"]) for r in rows]}


def _dry_run(
    body: dict[str, Any], prepared: PreparedCalls, now: datetime, rehearsed: list[CallRow] | None
) -> Work:
    """What a dry run answers: the rendered first rows and every row's verdict (and, for
    a rehearsal, who would stand in for which row); the Work writes nothing (no batch,
    no call, nobody dialled)."""
    out: dict[str, Any] = {
        "status": "success",
        "message": f"Dry run: {len(prepared.rows)} of {len(body['call_data'])} rows would be "
        "called; nothing was stored and nobody was dialled.",
        "dry_run": True,
        "call_count": len(prepared.rows),
        "preview": prepared.previews,
        "validation": _validation(body, prepared),
        "rejected": prepared.rejected,
        "warnings": prepared.warnings,
        "schedule": _schedule(prepared, now),
    }
    if rehearsed is not None:
        out["rehearsal"] = _rehearsal_rows(rehearsed)

    def write(_conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, out

    return write


def _create(conn: Connection, account_id: str, settings: Settings, body: dict[str, Any]) -> Work:
    """Check and prepare (reading only); the Work writes the batch and its calls."""
    _check_shape(body, settings)
    now = utcnow()
    batch_id = new_id()
    fields, prepared = _prepare(conn, account_id, settings, body, now, batch_id)
    test_mode = bool(body.get("test_mode"))
    rehearsal = body.get("rehearsal") is True
    rows = prepared.rows[:1] if test_mode else prepared.rows
    if rehearsal:
        rows = rehearsal_calls(prepared, body.get("rehearsal_rows"), now)
        prepared.warnings = rehearsal_warnings(fields, settings) + prepared.warnings
    if body.get("dry_run") is True:
        return _dry_run(body, prepared, now, rows if rehearsal else None)
    campaign_id = body.get("campaign_id")
    new = NewBatch(
        id=batch_id,
        campaign_id=campaign_id,
        label=body.get("label"),
        base_prompt=body["base_prompt"],
        call_params=fields,
        test_mode=test_mode,
        batch_webhook=body.get("batch_webhook"),
        total_calls=len(rows),
        rehearsal=rehearsal,
    )
    out: dict[str, Any] = {
        "status": "success",
        "message": "success",
        "batch_id": batch_id,
        "call_count": len(rows),
        "rejected": prepared.rejected,
        "warnings": prepared.warnings,
        "schedule": _schedule(prepared, now),
    }
    if test_mode:
        out["test"] = _test_report(body, prepared, rows)
    if rehearsal:
        out["rehearsal"] = _rehearsal_rows(rows)

    def write(conn: Connection) -> tuple[int, dict[str, Any]]:
        if campaign_id:
            batch_store.ensure_campaign(conn, account_id, campaign_id, now)
        batch_store.insert_batch(conn, account_id, new, now)
        call_store.insert_calls(conn, account_id, [r.values for r in rows])
        return 200, out

    return write


@router.post(
    "",
    summary="Send a batch of calls",
    responses=documented(SendBatchResponse, 400, 401, 409, 413, 422),
    openapi_extra=json_or_csv_body(SendBatchRequest, SendBatchForm),
)
async def send_batch(request: Request, runtime: RuntimeDep, account: AccountDep) -> JSONResponse:
    """A JSON body, or `multipart/form-data` with a CSV `file` and a `batch` JSON string."""
    settings = runtime.settings
    lines: list[int] | None = None
    if is_multipart(request):
        upload = await read_csv_body(request, batch_required=True, max_rows=settings.max_batch_rows)
        raw, body, lines = upload.fingerprint, upload.body, upload.lines
    else:
        raw, body = await read_json_object(request)

    def prepare(conn: Connection) -> Work:
        if lines is None:
            return _create(conn, account.id, settings, body)
        try:
            work = _create(conn, account.id, settings, body)
        except ApiError as exc:
            raise with_lines(exc, lines) from None
        return work_with_lines(work, lines)

    response = await respond_idempotently(runtime, account, request, raw, prepare)
    runtime.calls_queued()
    return response


@router.get(
    "", summary="List batches", response_model=None, responses=documented(BatchList, 400, 401)
)
def list_batches(
    runtime: RuntimeDep,
    account: AccountDep,
    page: PageDep,
    campaign_id: str | None = None,
) -> dict[str, Any]:
    with runtime.db.read() as conn:
        rows = batch_store.list_batches(conn, account.id, campaign_id, page)
    return {"status": "success", "batches": [batch_object(r) for r in rows]}


@router.get(
    "/{batch_id}",
    summary="Get a batch's details",
    response_model=None,
    responses=documented(BatchDetails, 400, 401, 404),
)
def batch_details(
    batch_id: str,
    runtime: RuntimeDep,
    account: AccountDep,
    include_calls: bool = True,
    include_transcripts: bool = True,
    include_analysis: bool = True,
    calls_offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
    calls_limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> dict[str, Any]:
    with runtime.db.read() as conn:
        details = batch_details_view(
            conn,
            account.id,
            batch_id,
            include_calls=include_calls,
            include_transcripts=include_transcripts,
            include_analysis=include_analysis,
            calls_offset=calls_offset,
            calls_limit=calls_limit,
        )
    return owned(details, "batch", batch_id, "/v1/batches")


@router.post(
    "/{batch_id}/stop",
    summary="Stop a batch",
    response_model=None,
    responses=documented(StopBatchResponse, 400, 401, 404),
)
def stop_batch(batch_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    now = utcnow()
    with runtime.db.write() as conn:
        owned(batch_store.get_batch(conn, account.id, batch_id), "batch", batch_id, "/v1/batches")
        batch_store.mark_stopped(conn, account.id, batch_id, now)
        status = _status_of(conn, account.id, batch_id)
        live = call_store.request_batch_hangups(conn, account.id, batch_id)
        cancelled = cancel_queued(
            conn,
            call_store.in_batch(account.id, batch_id),
            now,
            "Cancelled: the batch was stopped.",
        )
    runtime.hang_up(live)
    return {
        "status": "success",
        "message": f"Batch stopped: {cancelled} calls cancelled before dialling, "
        f"{len(live)} live calls are being hung up.",
        "num_calls": cancelled,
        "live_calls_ending": len(live),
        "batch_id": batch_id,
        "batch_status": status,
    }


@router.get(
    "/{batch_id}/analysis",
    summary="Get a batch's stored analyses",
    response_model=None,
    responses=documented(StoredAnalyses, 400, 401, 404),
)
def get_batch_analysis(batch_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        owned(batch_store.get_batch(conn, account.id, batch_id), "batch", batch_id, "/v1/batches")
        rows = batch_analyses(conn, account.id, batch_id)
    return {
        "status": "success",
        "message": f"{len(rows)} analyses",
        "analysis": [
            {
                "call_id": r.call_id,
                "batch_id": r.batch_id,
                "goal": r.goal or "",
                "questions": [q[0] if isinstance(q, list) else str(q) for q in r.questions],
                "answers": ["" if a is None else str(a) for a in r.answers],
            }
            for r in rows
        ],
    }


APPEND_FIELDS = frozenset({"call_data"})


def _not_appendable(batch: Any) -> ApiError | None:
    if batch.rehearsal:
        return ApiError(
            409,
            f"Batch {batch.id} is a rehearsal: it calls the simulator's personas for the "
            "first rows of a batch, so rows cannot be added to it. Send a new rehearsal, or "
            "send the batch itself with POST /v1/batches.",
            [FieldError("batch_id", "The batch is a rehearsal.")],
        )
    if batch.status == BatchStatus.STOPPED:
        why = "was stopped"
    elif batch.status == BatchStatus.COMPLETED or batch.completed_at is not None:
        why = "has completed"
    else:
        return None
    return ApiError(
        409,
        f"Batch {batch.id} {why}, so no calls can be added to it; send these rows as a new "
        "batch with POST /v1/batches (a campaign_id groups batches).",
        [FieldError("batch_id", f"The batch {why}.")],
    )


def _drop_existing(prepared: PreparedCalls, existing: dict[str, int]) -> None:
    """Reject the rows whose number the batch already calls (each number once per batch)."""
    kept = []
    for row in prepared.rows:
        to = row.values["to_number"]
        if to not in existing:
            kept.append(row)
            continue
        prepared.rejected.append(
            {
                "index": row.index,
                "phone_number": to,
                "errors": [
                    {
                        "field": f"call_data[{row.index}].phone_number",
                        "message": f"{to} is already in this batch (row {existing[to]}); "
                        "each number is called once per batch.",
                    }
                ],
            }
        )
    prepared.rows = kept
    prepared.rejected.sort(key=lambda r: int(r["index"]))


def _append(
    conn: Connection, account_id: str, settings: Settings, batch_id: str, body: dict[str, Any]
) -> Work:
    """Judge appended rows with the batch's stored prompt and settings; the Work adds them."""
    batch = owned(
        batch_store.get_batch(conn, account_id, batch_id), "batch", batch_id, "/v1/batches"
    )
    refused = _not_appendable(batch)
    if refused is not None:
        raise refused
    _check_shape({"base_prompt": batch.base_prompt, "call_data": body.get("call_data")}, settings)
    now = utcnow()
    rows = body["call_data"]
    prepared = prepare_calls(
        conn,
        account_id=account_id,
        settings=settings,
        base_prompt=batch.base_prompt,
        batch_fields=dict(batch.call_params or {}),
        rows=rows,
        now=now,
        batch_id=batch_id,
    )
    _drop_existing(prepared, batch_store.batch_numbers(conn, batch_id))
    prepared.warnings = [
        f"Unknown field `{k}` was ignored." for k in sorted(body) if k not in APPEND_FIELDS
    ] + prepared.warnings
    if not prepared.rows:
        raise ApiError(
            400,
            f"None of the {len(rows)} appended calls can be dialled; see `errors` for each "
            "row's reason.",
            _rejection_errors(prepared),
        )
    new_rows = prepared.rows

    def write(conn: Connection) -> tuple[int, dict[str, Any]]:
        first_seq = batch_store.add_calls(conn, account_id, batch_id, len(new_rows))
        if first_seq is None:
            current = batch_store.get_batch(conn, account_id, batch_id)
            raise _not_appendable(current) or ApiError(
                409, f"Batch {batch_id} has finished; send these rows as a new batch."
            )
        values = [{**r.values, "seq": first_seq + n} for n, r in enumerate(new_rows)]
        call_store.insert_calls(conn, account_id, values)
        total = batch_store.get_batch(conn, account_id, batch_id)
        return 200, {
            "status": "success",
            "message": f"{len(new_rows)} calls appended to batch {batch_id}.",
            "batch_id": batch_id,
            "call_count": len(new_rows),
            "total_calls": int(total.total_calls) if total is not None else len(new_rows),
            "rejected": prepared.rejected,
            "warnings": prepared.warnings,
            "schedule": _schedule(prepared, now),
        }

    return write


@router.post(
    "/{batch_id}/calls",
    summary="Append calls to a batch",
    response_model=None,
    responses=documented(AppendCallsResponse, 400, 401, 404, 409, 413, 422),
    openapi_extra=json_or_csv_body(AppendCallsRequest, AppendCallsForm),
)
async def append_calls(
    batch_id: str, request: Request, runtime: RuntimeDep, account: AccountDep
) -> JSONResponse:
    """Rows as JSON `{"call_data": [...]}` or a CSV `file`; the batch's prompt and settings
    apply. A stopped or completed batch is a 409."""
    settings = runtime.settings
    lines: list[int] | None = None
    if is_multipart(request):
        upload = await read_csv_body(
            request, batch_required=False, max_rows=settings.max_batch_rows
        )
        raw, body, lines = upload.fingerprint, upload.body, upload.lines
    else:
        raw, body = await read_json_object(request)

    def prepare(conn: Connection) -> Work:
        if lines is None:
            return _append(conn, account.id, settings, batch_id, body)
        try:
            work = _append(conn, account.id, settings, batch_id, body)
        except ApiError as exc:
            raise with_lines(exc, lines) from None
        return work_with_lines(work, lines)

    response = await respond_idempotently(runtime, account, request, raw, prepare)
    runtime.calls_queued()
    return response


# Pause, resume and export (the operator's controls over a sent batch).


def _status_of(conn: Connection, account_id: str, batch_id: str) -> str:
    batch = owned(
        batch_store.get_batch(conn, account_id, batch_id), "batch", batch_id, "/v1/batches"
    )
    return str(batch.status)


_MOVE_TEXT = {
    BatchStatus.PAUSED: "Batch paused: no queued call is dialled until it is resumed; "
    "calls already in progress finish.",
    BatchStatus.RUNNING: "Batch running: its queued calls are dialled again.",
}
_CANNOT = {
    (BatchStatus.PAUSED, BatchStatus.STOPPED): "The batch is stopped: its queued calls were "
    "cancelled, so there is nothing to pause. Send a new batch to call them again.",
    (BatchStatus.PAUSED, BatchStatus.COMPLETED): "The batch is completed: every call in it has "
    "ended, so there is nothing to pause.",
    (BatchStatus.RUNNING, BatchStatus.STOPPED): "The batch is stopped and cannot be resumed: "
    "its queued calls were cancelled. Send a new batch to call them again.",
    (BatchStatus.RUNNING, BatchStatus.COMPLETED): "The batch is completed: every call in it has "
    "ended, so there is nothing to resume.",
}


def _move(runtime: Any, account_id: str, batch_id: str, target: BatchStatus) -> dict[str, Any]:
    """Pause (RUNNING -> PAUSED) or resume (PAUSED -> RUNNING); idempotent; 409 if neither."""
    source = BatchStatus.RUNNING if target == BatchStatus.PAUSED else BatchStatus.PAUSED
    with runtime.db.write() as conn:
        status = batch_store.move_batch(conn, account_id, batch_id, source, target)
    status = owned(status, "batch", batch_id, "/v1/batches")
    if status != target:
        raise ApiError(409, _CANNOT[(target, BatchStatus(status))])
    if target == BatchStatus.RUNNING:
        runtime.calls_queued()
    return {
        "status": "success",
        "message": _MOVE_TEXT[target],
        "batch_id": batch_id,
        "batch_status": status,
    }


@router.post(
    "/{batch_id}/pause",
    summary="Pause a batch",
    description="No new dials: the batch's queued calls stay queued and none is admitted "
    "until it is resumed; calls already admitted or in progress finish. Pausing a paused "
    "batch changes nothing. A stopped or completed batch cannot be paused (409).",
    response_model=None,
    responses=documented(BatchStateResponse, 400, 401, 404, 409),
)
def pause_batch(batch_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    return _move(runtime, account.id, batch_id, BatchStatus.PAUSED)


@router.post(
    "/{batch_id}/resume",
    summary="Resume a paused batch",
    description="The batch's queued calls are dialled again. Resuming a running batch "
    "changes nothing. A stopped or completed batch cannot be resumed (409).",
    response_model=None,
    responses=documented(BatchStateResponse, 400, 401, 404, 409),
)
def resume_batch(batch_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    return _move(runtime, account.id, batch_id, BatchStatus.RUNNING)


EXPORT_BODY: dict[str, Any] = {
    "description": "One line per input row, in input order: the row's own columns, then "
    "`call_id, status, answered_by, attempts, started_at, ended_at, call_length, summary, "
    "disposition_tag, opted_out, error_message, recording_url`, then `analysis.<name>` "
    "for each analysis field. CSV has a header row; JSONL is one object per line.",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


@router.get(
    "/{batch_id}/export",
    summary="Export a batch's results (CSV or JSONL)",
    response_class=StreamingResponse,
    responses={200: EXPORT_BODY, **documented(None, 400, 401, 404)},
)
def export_batch(
    batch_id: str,
    runtime: RuntimeDep,
    account: AccountDep,
    format: Literal["csv", "jsonl"] = "csv",  # noqa: A002 - the public parameter's name
) -> StreamingResponse:
    with runtime.db.read() as conn:
        batch = owned(
            batch_store.get_batch(conn, account.id, batch_id), "batch", batch_id, "/v1/batches"
        )
    columns = export_columns(runtime.db, account.id, batch_id, batch.row_columns)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        export_lines(runtime.db, account.id, batch_id, columns, format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.{format}"'},
    )
