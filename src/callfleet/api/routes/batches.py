"""`/v1/batches`: send a batch (the seed), list, read, stop, analyze."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection

from callfleet.api.call_fields import CALL_FIELDS, check_fields
from callfleet.api.creating import read_json_object, respond_idempotently
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.api.submission import (
    BATCH_FIELDS,
    PreparedCalls,
    check_batch_shape,
    prepare_calls,
)
from callfleet.dispatch.lifecycle import cancel_queued
from callfleet.domain.errors import FieldError
from callfleet.store.ids import new_id, utcnow
from callfleet.store.tables import batches, call_analyses, calls, campaigns, transcript_turns
from callfleet.store.views import batch_analysis, batch_object, call_summary, iso

router = APIRouter(prefix="/v1/batches", tags=["batches"])
MAX_INDEX = 10**12  # larger offsets overflow the databases' 64-bit integers

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


def _schedule(prepared: PreparedCalls, now: Any) -> dict[str, Any]:
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


@router.post("", summary="Send a batch of calls")
async def send_batch(request: Request, runtime: RuntimeDep, account: AccountDep) -> JSONResponse:
    raw, body = await read_json_object(request)
    settings = runtime.settings

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        shape_errors = check_batch_shape(body, settings)
        if shape_errors:
            raise ApiError(
                400,
                "The batch is not in the expected shape: "
                f"{'; '.join(f'{e.field}: {e.message}' for e in shape_errors[:3])}",
                shape_errors,
            )
        fields, warnings = _batch_fields(body)
        now = utcnow()
        batch_id = new_id()
        prepared = prepare_calls(
            conn,
            account_id=account.id,
            settings=settings,
            base_prompt=body["base_prompt"],
            batch_fields=fields,
            rows=body["call_data"],
            now=now,
            batch_id=batch_id,
        )
        prepared.warnings = warnings
        if not prepared.rows:
            raise ApiError(
                400,
                f"None of the {len(body['call_data'])} calls can be dialled; see `errors` "
                "for each row's reason.",
                _rejection_errors(prepared),
            )
        test_mode = bool(body.get("test_mode"))
        rows = prepared.rows[:1] if test_mode else prepared.rows
        campaign_id = body.get("campaign_id")
        if campaign_id:
            exists = conn.execute(
                sa.select(campaigns.c.campaign_id).where(
                    campaigns.c.account_id == account.id, campaigns.c.campaign_id == campaign_id
                )
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(campaigns).values(
                        account_id=account.id, campaign_id=campaign_id, created_at=now
                    )
                )
        conn.execute(
            sa.insert(batches).values(
                id=batch_id,
                account_id=account.id,
                campaign_id=campaign_id,
                label=body.get("label"),
                base_prompt=body["base_prompt"],
                call_params=fields,
                endpoint_code="api",
                status="running",
                test_mode=test_mode,
                batch_webhook=body.get("batch_webhook"),
                total_calls=len(rows),
                remaining=len(rows),
                created_at=now,
            )
        )
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(calls), [r.values for r in rows[start : start + 5000]])
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
            first = rows[0].values
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
            out["test"] = {
                "dispatched_row": rows[0].index,
                "rendered_prompt": first["task"],
                "parameters": first["params"],
                "to": first["to_number"],
                "from": first["from_number"],
                "scheduled_for": iso(first["not_before"]),
                "validation": {
                    "rows": len(body["call_data"]),
                    "valid": len(prepared.rows),
                    "rejected": prepared.rejected,
                    "report": report,
                },
                "warnings": prepared.warnings,
            }
        return 200, out

    response = await respond_idempotently(runtime, account, request, raw, work)
    runtime.calls_queued()
    return response


@router.get("", summary="List batches")
def list_batches(
    runtime: RuntimeDep,
    account: AccountDep,
    campaign_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    from_: Annotated[int | None, Query(alias="from", ge=0, le=MAX_INDEX)] = None,
    to: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None,
    ascending: bool = False,
) -> dict[str, Any]:
    query = sa.select(batches).where(batches.c.account_id == account.id)
    if campaign_id is not None:
        query = query.where(batches.c.campaign_id == campaign_id)
    order = batches.c.created_at.asc() if ascending else batches.c.created_at.desc()
    start = from_ or 0
    count = limit if to is None else max(0, min(limit, to - start))
    with runtime.db.read() as conn:
        rows = conn.execute(query.order_by(order, batches.c.id).offset(start).limit(count)).all()
    return {"status": "success", "batches": [batch_object(r) for r in rows]}


def _owned_batch(conn: Connection, account_id: str, batch_id: str) -> Any:
    row = conn.execute(
        sa.select(batches).where(batches.c.id == batch_id, batches.c.account_id == account_id)
    ).first()
    if row is None:
        raise ApiError(
            404, f"No batch {batch_id!r} in this account; list them with GET /v1/batches."
        )
    return row


@router.get("/{batch_id}", summary="Get a batch's details")
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
        batch = _owned_batch(conn, account.id, batch_id)
        obj = batch_object(batch)
        params = {k: v for k, v in obj.items() if k != "batch_id"}
        out: dict[str, Any] = {"status": "success", "batch_params": params}
        out["analysis"] = batch_analysis(conn, batch_id, full=include_analysis)
        call_data: list[dict[str, Any]] = []
        if include_calls:
            rows = conn.execute(
                sa.select(calls)
                .where(calls.c.batch_id == batch_id)
                .order_by(calls.c.seq)
                .offset(calls_offset)
                .limit(calls_limit)
            ).all()
            call_data = [call_summary(r) for r in rows]
            if include_transcripts and call_data:
                ids = [c["call_id"] for c in call_data]
                turns: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
                for start in range(0, len(ids), 500):
                    for t in conn.execute(
                        sa.select(transcript_turns)
                        .where(transcript_turns.c.call_id.in_(ids[start : start + 500]))
                        .order_by(transcript_turns.c.id)
                    ):
                        turns[t.call_id].append(
                            {
                                "id": t.id,
                                "created_at": iso(t.created_at),
                                "text": t.text,
                                "user": t.user,
                            }
                        )
                for c in call_data:
                    c["transcripts"] = turns[c["call_id"]]
        out["call_data"] = call_data
        out["calls_total"] = batch.total_calls
        out["calls_offset"] = calls_offset
    return out


@router.post("/{batch_id}/stop", summary="Stop a batch")
def stop_batch(batch_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    now = utcnow()
    with runtime.db.write() as conn:
        _owned_batch(conn, account.id, batch_id)
        conn.execute(
            sa.update(batches)
            .where(batches.c.id == batch_id, batches.c.status == "running")
            .values(status="stopped", stopped_at=now)
        )
        live = [
            r[0]
            for r in conn.execute(
                sa.select(calls.c.id).where(
                    calls.c.batch_id == batch_id, calls.c.state.in_(("dialing", "live"))
                )
            )
        ]
        if live:
            conn.execute(sa.update(calls).where(calls.c.id.in_(live)).values(hangup_requested=True))
        cancelled = cancel_queued(
            conn, calls.c.batch_id == batch_id, now, "Cancelled: the batch was stopped."
        )
    runtime.hang_up(live)
    return {
        "status": "success",
        "message": f"Batch stopped: {cancelled} calls cancelled before dialling, "
        f"{len(live)} live calls are being hung up.",
        "num_calls": cancelled,
        "live_calls_ending": len(live),
        "batch_id": batch_id,
    }


@router.get("/{batch_id}/analysis", summary="Get a batch's stored analyses")
def get_batch_analysis(batch_id: str, runtime: RuntimeDep, account: AccountDep) -> dict[str, Any]:
    with runtime.db.read() as conn:
        _owned_batch(conn, account.id, batch_id)
        rows = conn.execute(
            sa.select(call_analyses)
            .where(call_analyses.c.batch_id == batch_id, call_analyses.c.account_id == account.id)
            .order_by(call_analyses.c.id)
        ).all()
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
