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
from callfleet.store.tables import batches, calls, transcript_turns

__all__ = [
    "LENGTH_BUCKETS",
    "batch_analysis",
    "batch_object",
    "batch_webhook_payload",
    "call_details",
    "call_summary",
    "public_call_params",
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
        "completed": row.state == "ended",
        "queue_status": row.queue_status,
        "status": row.status,
        "call_length": row.call_length or 0.0,
        "answered_by": row.answered_by or "",
        "error_message": row.error_message or "",
        "batch_id": row.batch_id or "",
        "attempt": row.attempt,
        "scheduled_for": iso(row.not_before) if row.state == "queued" else None,
    }


def _variables(row: Row[Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row.request_data or {})
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


def call_details(conn: Connection, call_id: str) -> dict[str, Any] | None:
    """The full call object of `GET /v1/calls/{call_id}` (with `_account_id`)."""
    row = conn.execute(sa.select(calls).where(calls.c.id == call_id)).first()
    if row is None:
        return None
    turns = conn.execute(
        sa.select(transcript_turns)
        .where(transcript_turns.c.call_id == call_id)
        .order_by(transcript_turns.c.id)
    ).all()
    transcripts = [
        {
            "id": t.id,
            "created_at": iso(t.created_at),
            "text": t.text,
            "user": t.user,
            "c_id": call_id,
        }
        for t in turns
    ]
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
            "request_data": {k: _text(v) for k, v in (row.request_data or {}).items()},
            "variables": _variables(row),
            "metadata": row.metadata,
            "transcripts": transcripts,
            "concatenated_transcript": "\n".join(f"{t['user']}: {t['text']}" for t in transcripts),
            "record": row.record,
            "recording_url": f"/v1/calls/{row.id}/recording" if row.recording_path else None,
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
    }


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
        if state == "ended" and status:
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
        "completed_calls": states["ended"],
        "in_progress_calls": states["admitted"] + states["dialing"] + states["live"],
        "queued_calls": states["queued"],
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
    }
