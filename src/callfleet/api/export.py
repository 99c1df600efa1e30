"""A batch's results as a table: `GET /v1/batches/{id}/export?format=csv|jsonl`.

One line per input row, in input order: the row's own columns (its `request_data`
properties as sent, in the order the batch's rows named them), then `RESULT_COLUMNS`,
then each analysis field as `analysis.<name>`. The body is streamed: two keyset
passes over the batch's calls (`store.calls.export_page`, one short read
transaction per page), the first for the column names, the second for the lines,
so memory stays flat however many rows the batch has.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from callfleet.store import calls as call_store
from callfleet.store.db import Database

__all__ = ["RESULT_COLUMNS", "Columns", "export_columns", "export_lines"]

RESULT_COLUMNS = (
    "call_id",
    "status",
    "answered_by",
    "attempts",
    "started_at",
    "ended_at",
    "call_length",
    "summary",
    "disposition_tag",
    "opted_out",
    "error_message",
    "recording_url",
)
INPUT_PREFIX = "input."
"""Put before a row's own column whose name is also a result column's."""


class Columns:
    """The export's columns: the rows' own, then the results, then the analysis fields."""

    def __init__(self, own: list[str], analysis: list[str]) -> None:
        self.own = own
        self.analysis = analysis

    def header(self) -> list[str]:
        taken = set(RESULT_COLUMNS)
        own = [INPUT_PREFIX + n if n in taken else n for n in self.own]
        return [*own, *RESULT_COLUMNS, *(f"analysis.{n}" for n in self.analysis)]


def _pages(db: Database, account_id: str, batch_id: str) -> Iterator[list[Any]]:
    after: tuple[int, str] | None = None
    while True:
        with db.read() as conn:
            rows = call_store.export_page(conn, account_id, batch_id, after)
        if not rows:
            return
        yield rows
        after = (rows[-1].seq, rows[-1].id)


def export_columns(
    db: Database, account_id: str, batch_id: str, known: list[str] | None
) -> Columns:
    """The columns in order: `known` (the batch's `row_columns`) then any other row key."""
    own = dict.fromkeys(known or [])
    analysis: dict[str, None] = {}
    for rows in _pages(db, account_id, batch_id):
        for row in rows:
            for name in row.request_data or {}:
                own.setdefault(str(name), None)
            if isinstance(row.analysis, dict):
                for name in row.analysis:
                    analysis.setdefault(str(name), None)
    return Columns(list(own), list(analysis))


def _results(row: Any) -> list[Any]:
    return [
        row.id,
        row.status or row.queue_status,
        row.answered_by,
        row.attempt,
        row.started_at.isoformat() if row.started_at else None,
        row.ended_at.isoformat() if row.ended_at else None,
        row.call_length,
        row.summary,
        row.disposition_tag,
        bool(row.opted_out),
        row.error_message,
        f"/v1/calls/{row.id}/recording" if row.recording_path else None,
    ]


def _values(row: Any, columns: Columns) -> list[Any]:
    data = row.request_data or {}
    analysis = row.analysis if isinstance(row.analysis, dict) else {}
    return [
        *(data.get(n) for n in columns.own),
        *_results(row),
        *(analysis.get(n) for n in columns.analysis),
    ]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def export_lines(
    db: Database, account_id: str, batch_id: str, columns: Columns, fmt: str
) -> Iterator[bytes]:
    """The export's body, a page of lines at a time (CSV with a header row, or JSONL)."""
    header = columns.header()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if fmt == "csv":
        writer.writerow(header)
    for rows in _pages(db, account_id, batch_id):
        for row in rows:
            values = _values(row, columns)
            if fmt == "csv":
                writer.writerow([_cell(v) for v in values])
            else:
                obj = dict(zip(header, values, strict=True))
                buffer.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if fmt == "csv" and buffer.tell():
        yield buffer.getvalue().encode("utf-8")
