"""Erasure of what an account holds about one phone number (`POST /v1/erasure`).

Two steps, because the recordings live outside the database: `find_calls` lists the
account's ended calls to the number (or already erased under its hash) with their
recording keys; the caller deletes those objects from the storage; then `erase`
rewrites the calls in one transaction: the number becomes its keyed hash, the
rendered prompt, row properties, summary, analysis and transcript text become
`"erased"`, the call's events are deleted and its webhook payloads replaced, the
recording is marked `erased`, the number goes on the do-not-call list (reason
`erasure`) and an audit row records who asked, when, and how much was erased. The
call rows stay, so counts, billing and batch totals still add up.

Running it again finds the same calls by their hash and erases nothing new, so
it is idempotent; the audit says so (zeros).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.domain.call_fields import RENDERED_FIELDS
from callfleet.domain.states import CallState
from callfleet.store.ids import new_id
from callfleet.store.recordings import RecordingState, recording_keys
from callfleet.store.tables import (
    call_analyses,
    calls,
    dnc,
    erasures,
    events,
    recording_uploads,
    transcript_turns,
    webhook_deliveries,
)

__all__ = ["ERASED", "Erasure", "erase", "erased_number", "find_calls"]

ERASED = "erased"
_CHUNK = 500


def erased_number(fingerprint: str) -> str:
    """What `to_number` holds once erased: 20 characters, like the column."""
    return f"erased-{fingerprint[:13]}"


@dataclass
class Erasure:
    calls: list[str] = field(default_factory=list)
    recording_keys: list[str] = field(default_factory=list)
    recordings: int = 0
    transcript_turns: int = 0
    summaries: int = 0
    analyses: int = 0
    row_properties: int = 0
    live_calls: int = 0
    """Calls to the number still dialling or live: erase again once they end."""
    added_to_dnc: bool = False


def find_calls(conn: Connection, account_id: str, number: str, hashed: str) -> Erasure:
    """The account's calls to `number` (or already erased as `hashed`) and their recordings."""
    rows = conn.execute(
        sa.select(
            calls.c.id,
            calls.c.state,
            calls.c.attempt,
            calls.c.recording_path,
            calls.c.recording_state,
        ).where(calls.c.account_id == account_id, calls.c.to_number.in_((number, hashed)))
    ).all()
    found = Erasure()
    for row in rows:
        if row.state != CallState.ENDED:
            found.live_calls += 1
            continue
        found.calls.append(row.id)
        live = row.recording_state in (RecordingState.STORED, RecordingState.UPLOADING)
        if live:
            found.recording_keys += recording_keys(row.id, row.attempt, row.recording_path)
    return found


def erase(
    conn: Connection,
    found: Erasure,
    *,
    account_id: str,
    number: str,
    fingerprint: str,
    key_id: str | None,
    now: datetime,
) -> Erasure:
    """Erase the calls `find_calls` found (their recordings already deleted)."""
    hashed = erased_number(fingerprint)
    for start in range(0, len(found.calls), _CHUNK):
        _erase_chunk(conn, found, found.calls[start : start + _CHUNK], hashed, now)
    found.added_to_dnc = add_erasure_dnc(conn, account_id, number, now)
    conn.execute(
        sa.insert(erasures).values(
            id=new_id(),
            account_id=account_id,
            key_id=key_id,
            number_hash=fingerprint,
            calls=len(found.calls),
            recordings=found.recordings,
            transcript_turns=found.transcript_turns,
            analyses=found.analyses,
            created_at=now,
        )
    )
    return found


def _erase_chunk(
    conn: Connection, found: Erasure, ids: list[str], hashed: str, now: datetime
) -> None:
    mine = calls.c.id.in_(ids)
    found.recordings += conn.execute(
        sa.update(calls)
        .where(mine, calls.c.recording_state.in_((RecordingState.STORED, RecordingState.UPLOADING)))
        .values(
            recording_state=RecordingState.ERASED, recording_removed_at=now, recording_path=None
        )
    ).rowcount
    conn.execute(sa.delete(recording_uploads).where(recording_uploads.c.call_id.in_(ids)))
    found.summaries += conn.execute(
        sa.update(calls)
        .where(mine, calls.c.summary.is_not(None), calls.c.summary != ERASED)
        .values(summary=ERASED)
    ).rowcount
    found.row_properties += conn.execute(
        sa.update(calls)
        .where(mine, calls.c.task != ERASED)
        .values(task=ERASED, request_data={ERASED: ERASED}, metadata=None)
    ).rowcount
    conn.execute(
        sa.update(calls).where(mine, calls.c.analysis.is_not(None)).values(analysis=ERASED)
    )
    conn.execute(sa.update(calls).where(mine).values(to_number=hashed))
    found.transcript_turns += conn.execute(
        sa.update(transcript_turns)
        .where(transcript_turns.c.call_id.in_(ids), transcript_turns.c.text != ERASED)
        .values(text=ERASED)
    ).rowcount
    found.analyses += conn.execute(
        sa.update(call_analyses)
        .where(
            call_analyses.c.call_id.in_(ids),
            sa.or_(call_analyses.c.goal.is_(None), call_analyses.c.goal != ERASED),
        )
        .values(goal=ERASED, questions=ERASED, answers=ERASED)
    ).rowcount
    _erase_rendered_texts(conn, ids)
    conn.execute(sa.delete(events).where(events.c.call_id.in_(ids)))
    conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.call_id.in_(ids))
        .values(payload={"call_id": None, ERASED: True})
    )


def _erase_rendered_texts(conn: Connection, ids: list[str]) -> None:
    """The call's own texts rendered with the row's values (a greeting with a name)."""
    for row in conn.execute(sa.select(calls.c.id, calls.c.params).where(calls.c.id.in_(ids))):
        params = dict(row.params or {})
        hit = [k for k in RENDERED_FIELDS if k in params and params[k] != ERASED]
        if hit:
            params.update(dict.fromkeys(hit, ERASED))
            conn.execute(sa.update(calls).where(calls.c.id == row.id).values(params=params))


def add_erasure_dnc(conn: Connection, account_id: str, number: str, now: datetime) -> bool:
    """Put `number` on the do-not-call list with reason `erasure` (if not yet there)."""
    there = conn.execute(
        sa.select(dnc.c.reason).where(dnc.c.account_id == account_id, dnc.c.phone_number == number)
    ).first()
    if there is not None:
        return False
    conn.execute(
        sa.insert(dnc).values(
            account_id=account_id,
            phone_number=number,
            reason="erasure",
            source="erasure",
            created_at=now,
        )
    )
    return True
