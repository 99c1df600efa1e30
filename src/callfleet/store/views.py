"""Read models: the public JSON shapes of calls and batches, built from rows.

These are the shapes of API.md (the hosted product's field names), used by the API
routes and by the webhooks, so a call's webhook body is exactly its
`GET /v1/calls/{call_id}` object. Keys starting with `_` are internal and are
stripped before anything leaves the process.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.domain.latency import batch_latency
from callfleet.domain.states import ACTIVE_STATES, CallState
from callfleet.store.batches import expand_stored_call, get_batch
from callfleet.store.calls import batch_calls
from callfleet.store.tables import batches, calls, transcript_turns

__all__ = [
    "LENGTH_BUCKETS",
    "batch_analysis",
    "batch_details",
    "batch_object",
    "batch_webhook_payload",
    "call_details",
    "call_summary",
    "call_transcripts",
    "public_call_params",
    "transcript_turn",
]

LENGTH_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0-5", 0, 5),
    ("5-10", 5, 10),
    ("10-15", 10, 15),
    ("15-20", 15, 20),
    ("20-30", 20, 30),
    ("30-45", 30, 45),
    ("45-60", 45, 60),
    ("60-90", 60, 90),
    ("90-120", 90, 120),
    ("120+", 120, float("inf")),
)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _text(value: Any) -> str:
    """The hosted API's clients expect strings where we might hold other JSON values."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def call_summary(row: Row[Any]) -> dict[str, Any]:
    """The short form used in lists and in a batch's `call_data`.

    Strings the official SDK requires are never null: "" stands for "none".
    """
    return {
        "call_id": row.id,
        "created_at": iso(row.created_at),
        "createdAt": iso(row.created_at),
        "to": row.to_number,
        "from": row.from_number or "",
        "completed": row.state == CallState.ENDED,
        "queue_status": row.queue_status,
        "status": row.status,
        "call_length": row.call_length or 0.0,
        "answered_by": row.answered_by or "",
        "error_message": row.error_message or "",
        "batch_id": row.batch_id or "",
        "attempt": row.attempt,
        "scheduled_for": iso(row.not_before) if row.state == CallState.QUEUED else None,
        # Why a queued call waits past its window (the daily cap, a paused caller ID).
        "waiting_reason": row.waiting_reason if row.state == CallState.QUEUED else None,
        "summary": row.summary,
        "disposition_tag": row.disposition_tag,
        "analysis": row.analysis,
        # The callee asked on this call not to be called again (dispatch.lifecycle).
        "opted_out": bool(row.opted_out),
        "metadata": _listed_metadata(row),
        # A rehearsal call: the row it stood in for and the persona that answered.
        "rehearsal_of": row.rehearsal_of,
    }


def _listed_metadata(row: Row[Any]) -> Any:
    """The call's own `metadata`, else its batch's (when the row was read with it)."""
    if row.metadata is not None:
        return row.metadata
    shared = row._mapping.get("batch_call_params")
    return shared.get("metadata") if isinstance(shared, dict) else None


def _variables(row: Row[Any], request_data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(request_data)
    out.update(
        {
            "call_id": row.id,
            "to": row.to_number,
            "from": row.from_number,
            "short_to": row.to_number[2:] if row.to_number.startswith("+1") else row.to_number,
            "short_from": (row.from_number or "")[2:]
            if (row.from_number or "").startswith("+1")
            else row.from_number,
            "phone_number": row.to_number,
            "timezone": row.callee_tz,
        }
    )
    return {k: _text(v) for k, v in out.items()}


def transcript_turn(row: Row[Any]) -> dict[str, Any]:
    """One line of a call's `transcripts`."""
    return {"id": row.id, "created_at": iso(row.created_at), "text": row.text, "user": row.user}


def call_transcripts(conn: Connection, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each call's transcript turns in the order they were said (500 calls per query)."""
    turns: dict[str, list[dict[str, Any]]] = {i: [] for i in call_ids}
    for start in range(0, len(call_ids), 500):
        for t in conn.execute(
            sa.select(transcript_turns)
            .where(transcript_turns.c.call_id.in_(call_ids[start : start + 500]))
            .order_by(transcript_turns.c.id)
        ):
            turns[t.call_id].append(transcript_turn(t))
    return turns


def call_details(conn: Connection, call_id: str) -> dict[str, Any] | None:
    """The full call object of `GET /v1/calls/{call_id}` (with `_account_id`)."""
    row = conn.execute(sa.select(calls).where(calls.c.id == call_id)).first()
    if row is None:
        return None
    transcripts = [{**t, "c_id": call_id} for t in call_transcripts(conn, [call_id])[call_id]]
    # A batch call keeps only its own values; the batch's shared ones are merged back.
    _task, params, variables = expand_stored_call(
        conn, row.batch_id, row.task, row.params, row.request_data
    )
    details = call_summary(row)
    details.update(
        {
            "c_id": row.id,
            "started_at": iso(row.started_at),
            "answered_at": iso(row.answered_at),
            "end_at": iso(row.ended_at),
            "max_duration": row.max_duration,
            "endpoint_url": row.endpoint_url or "",
            "corrected_duration": row.call_length or 0.0,
            "request_data": {k: _text(v) for k, v in variables.items()},
            "variables": _variables(row, variables),
            "metadata": params.get("metadata") if row.batch_id and not row.task else row.metadata,
            "transcripts": transcripts,
            "concatenated_transcript": "\n".join(f"{t['user']}: {t['text']}" for t in transcripts),
            "record": row.record,
            "recording_url": f"/v1/calls/{row.id}/recording" if row.recording_path else None,
            **recording_fields(row),
            "summary": row.summary,
            "analysis": row.analysis,
            "call_ended_by": row.call_ended_by,
            "disposition_tag": row.disposition_tag,
            # Post-call work: null (none), "pending", "done" or "failed".
            "postcall_state": row.postcall_state,
            "model": row.model,
            "latency_ms": row.latency,
            "_account_id": row.account_id,
        }
    )
    return details


def recording_fields(row: Any) -> dict[str, Any]:
    """The recording's life: `recording_state` (null, uploading, stored, deleted,
    expired, erased, lost), when it expires, and when it was removed and why."""
    state, removed = row.recording_state, iso(row.recording_removed_at)
    return {
        "recording_state": state,
        "recording_expires_at": iso(row.recording_expires_at),
        "recording_expired_at": removed if state == "expired" else None,
        "recording_deleted_at": removed if state in ("deleted", "erased") else None,
    }


def public_call_params(params: dict[str, Any]) -> dict[str, Any]:
    """Batch-level Send Call fields, with the keys every client expects filled in."""
    out = dict(params)
    out.setdefault("reduce_latency", False)
    voice_id = out.get("voice_id", 0)
    out["voice_id"] = (
        voice_id if isinstance(voice_id, int) and not isinstance(voice_id, bool) else 0
    )
    out.setdefault("language", "en-US")
    out["max_duration"] = int(out.get("max_duration", 30))
    out.setdefault("wait_for_greeting", False)
    return out


def batch_object(row: Row[Any]) -> dict[str, Any]:
    return {
        "batch_id": row.id,
        "id": row.id,
        "campaign_id": row.campaign_id or "",
        "created_at": iso(row.created_at),
        "label": row.label or "",
        "base_prompt": row.base_prompt,
        "endpoint_code": row.endpoint_code,
        "call_params": public_call_params(row.call_params),
        "status": row.status,
        "total_calls": row.total_calls,
        "completed_at": iso(row.completed_at),
        "test_mode": bool(row.test_mode),
        "rehearsal": bool(row.rehearsal),
    }


def batch_details(
    conn: Connection,
    account_id: str,
    batch_id: str,
    *,
    include_calls: bool,
    include_transcripts: bool,
    include_analysis: bool,
    calls_offset: int,
    calls_limit: int,
) -> dict[str, Any] | None:
    """The body of `GET /v1/batches/{batch_id}`, or None if the account has no such batch."""
    batch = get_batch(conn, account_id, batch_id)
    if batch is None:
        return None
    obj = batch_object(batch)
    params = {k: v for k, v in obj.items() if k != "batch_id"}
    out: dict[str, Any] = {"status": "success", "batch_params": params}
    out["analysis"] = batch_analysis(conn, batch_id, full=include_analysis)
    call_data: list[dict[str, Any]] = []
    if include_calls:
        rows = batch_calls(conn, account_id, batch_id, calls_offset, calls_limit)
        call_data = [call_summary(r) for r in rows]
        if include_transcripts and call_data:
            turns = call_transcripts(conn, [c["call_id"] for c in call_data])
            for c in call_data:
                c["transcripts"] = turns[c["call_id"]]
    out["call_data"] = call_data
    out["calls_total"] = batch.total_calls
    out["calls_offset"] = calls_offset
    return out


def batch_analysis(conn: Connection, batch_id: str, *, full: bool = True) -> dict[str, Any]:
    """Aggregates over a batch's calls: statuses, call lengths, errors.

    Counts come from SQL aggregates; `full` adds the per-call lists (`call_ids`,
    `call_lengths.all`, error messages, endpoints), which cost a row per call.
    """
    by_state = conn.execute(
        sa.select(calls.c.state, calls.c.queue_status, calls.c.status, sa.func.count())
        .where(calls.c.batch_id == batch_id)
        .group_by(calls.c.state, calls.c.queue_status, calls.c.status)
    ).all()
    queue_statuses: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for state, queue_status, status, n in by_state:
        queue_statuses[queue_status] += n
        states[state] += n
        if state == CallState.ENDED and status:
            statuses[status] += n
    summary = {name: 0 for name, _, _ in LENGTH_BUCKETS}
    lengths: list[float] = []
    ids: list[str] = []
    errors: list[str] = []
    endpoints: Counter[str] = Counter()
    samples: list[float] = []
    if full:
        rows = conn.execute(
            sa.select(
                calls.c.id,
                calls.c.call_length,
                calls.c.error_message,
                calls.c.endpoint_url,
                calls.c.latency,
            )
            .where(calls.c.batch_id == batch_id)
            .order_by(calls.c.seq)
        ).all()
        for r in rows:
            if isinstance(r.latency, dict):
                samples.extend(float(x) for x in r.latency.get("samples_ms") or ())
        ids = [r.id for r in rows]
        lengths = [r.call_length for r in rows if r.call_length is not None]
        errors = sorted({r.error_message for r in rows if r.error_message})
        endpoints.update(r.endpoint_url for r in rows if r.endpoint_url)
        for minutes in lengths:
            seconds = minutes * 60
            for name, low, high in LENGTH_BUCKETS:
                if low <= seconds < high:
                    summary[name] += 1
                    break
    nonzero = [x for x in lengths if x > 0]
    return {
        "total_calls": sum(states.values()),
        "completed_calls": states[CallState.ENDED],
        "in_progress_calls": sum(states[s] for s in ACTIVE_STATES),
        "queued_calls": states[CallState.QUEUED],
        "queue_statuses": dict(queue_statuses),
        "statuses": dict(statuses),
        "call_lengths": {
            "average": sum(lengths) / len(lengths) if lengths else 0,
            "average_nonzero": sum(nonzero) / len(nonzero) if nonzero else 0,
            "summary": summary,
            "all": lengths,
        },
        "call_ids": ids,
        "error_messages": errors,
        "endpoints": dict(endpoints),
        "latency_ms": batch_latency(samples),
    }


def batch_webhook_payload(conn: Connection, batch_id: str) -> dict[str, Any]:
    """The `batch_webhook` body: id, status, counts by outcome, timestamps."""
    batch = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).one()
    counts = conn.execute(
        sa.select(calls.c.status, sa.func.count())
        .where(calls.c.batch_id == batch_id)
        .group_by(calls.c.status)
    ).all()
    return {
        "batch_id": batch.id,
        "status": batch.status,
        "label": batch.label,
        "campaign_id": batch.campaign_id,
        "total_calls": batch.total_calls,
        "counts": {str(status): n for status, n in counts if status is not None},
        "created_at": iso(batch.created_at),
        "stopped_at": iso(batch.stopped_at),
        "completed_at": iso(batch.completed_at),
        "rehearsal": bool(batch.rehearsal),
    }
