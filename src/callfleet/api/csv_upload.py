"""`multipart/form-data` bodies: a CSV `file` of calls and a `batch` JSON string.

Starlette spools the uploaded file (to disk past 1 MiB); `domain.csv_rows` decodes
and parses it from there row by row, so the file is never held as one string. The
rows become the body's `call_data`, and each row's CSV line number is kept so that
every error and rejection naming `call_data[i]` also says `line N`. The
Idempotency-Key fingerprint hashes the content (the `batch` field and the file's
bytes), not the multipart framing, whose boundary changes on every retry.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import IO, Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from callfleet.api.creating import Work, parse_json_object
from callfleet.api.errors import ApiError
from callfleet.domain.csv_rows import CsvProblem, read_csv_rows
from callfleet.domain.errors import FieldError

__all__ = ["CsvBody", "is_multipart", "read_csv_body", "with_lines", "work_with_lines"]

CHUNK = 1024 * 1024
_INDEX = re.compile(r"^call_data\[(\d+)\]")


@dataclass
class CsvBody:
    fingerprint: bytes
    """What the Idempotency-Key hashes: the content, not the multipart framing."""
    body: dict[str, Any]
    lines: list[int] = field(default_factory=list)


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def _digest(batch_raw: bytes, upload: IO[bytes]) -> bytes:
    digest = hashlib.sha256(b"multipart/form-data\x00")
    digest.update(hashlib.sha256(batch_raw).digest())
    upload.seek(0)
    while chunk := upload.read(CHUNK):
        digest.update(chunk)
    return b"csv:" + digest.hexdigest().encode()


def _parse(batch_raw: bytes, upload: IO[bytes], batch_required: bool, max_rows: int) -> CsvBody:
    """Blocking: hash and parse the spooled upload (run in a thread)."""
    body = parse_json_object(batch_raw, "batch") if batch_raw.strip() or batch_required else {}
    phone_column = body.pop("phone_column", None)
    if phone_column is not None and (not isinstance(phone_column, str) or not phone_column):
        raise ApiError(
            400,
            "`phone_column` must be the name of a column of the CSV's header row.",
            [
                FieldError(
                    "batch.phone_column", f"Must be a non-empty string, got {phone_column!r}."
                )
            ],
        )
    if "call_data" in body:
        raise ApiError(
            400,
            "Send the calls either as the CSV `file` or as `call_data` in a JSON body, not both.",
            [FieldError("batch.call_data", "Remove it: the CSV file's rows are the calls.")],
        )
    fingerprint = _digest(batch_raw, upload)
    try:
        parsed = read_csv_rows(upload, phone_column=phone_column, max_rows=max_rows)
    except CsvProblem as exc:
        if exc.field == "call_data":
            raise ApiError(
                413,
                f"A batch holds at most {max_rows} calls and this CSV has more; split it "
                "into several files (a campaign_id groups their batches).",
                [FieldError("file", exc.message)],
            ) from None
        raise ApiError(400, exc.message, [FieldError(exc.field, exc.message)]) from None
    body["call_data"] = parsed.rows
    return CsvBody(fingerprint, body, parsed.lines)


async def read_csv_body(request: Request, *, batch_required: bool, max_rows: int) -> CsvBody:
    """The multipart request's `batch` object with its CSV `file` as `call_data`."""
    try:
        form = await request.form(max_files=1, max_fields=16)
    except Exception as exc:  # noqa: BLE001 - starlette raises several kinds for bad framing
        raise ApiError(
            400,
            f"The multipart/form-data body cannot be read: {exc}. Send a `file` part (the "
            "CSV) and a `batch` part (a JSON string).",
            [FieldError("body", "Not valid multipart/form-data.")],
        ) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                400,
                "The multipart body has no `file` part: attach the CSV as a file named `file`.",
                [FieldError("file", "Required: a CSV file with a header row.")],
            )
        batch = form.get("batch")
        if isinstance(batch, UploadFile):
            batch_raw = await batch.read()
        else:
            batch_raw = (batch or "").encode()
        return await run_in_threadpool(_parse, batch_raw, upload.file, batch_required, max_rows)
    finally:
        await form.close()


def _line_of(name: str, lines: list[int]) -> int | None:
    match = _INDEX.match(name)
    if match is None:
        return None
    index = int(match.group(1))
    return lines[index] if index < len(lines) else None


def with_lines(exc: ApiError, lines: list[int]) -> ApiError:
    """The same error with each `call_data[i]` error also naming its CSV line."""
    errors = []
    for e in exc.errors:
        line = _line_of(e.field, lines)
        errors.append(e if line is None else FieldError(e.field, f"{e.message} (CSV line {line})"))
    message = exc.message
    line = _line_of(message, lines)
    if line is not None:
        message = f"CSV line {line}: {message}"
    return ApiError(exc.status_code, message, errors, exc.headers)


def _annotate(result: dict[str, Any], lines: list[int]) -> None:
    """Add `line` to every per-row entry of a send or append response."""
    entries = list(result.get("rejected") or [])
    for validation in ((result.get("test") or {}).get("validation"), result.get("validation")):
        entries.extend((validation or {}).get("report") or [])
        entries.extend((validation or {}).get("rejected") or [])
    entries.extend(result.get("preview") or [])  # a dry run's rendered rows
    entries.extend((result.get("rehearsal") or {}).get("rows") or [])
    for entry in entries:
        index = entry.get("index")
        if isinstance(index, int) and index < len(lines):
            entry["line"] = lines[index]
            marker = f" (CSV line {lines[index]})"
            for err in entry.get("errors") or []:  # shared between lists: mark once
                if not str(err.get("message", "")).endswith(marker):
                    err["message"] = f"{err.get('message', '')}{marker}"
    warnings = result.get("warnings")
    if warnings:
        result["warnings"] = [_warning_line(w, lines) for w in warnings]


def _warning_line(text: str, lines: list[int]) -> str:
    line = _line_of(text, lines)
    return text if line is None else f"line {line}: {text}"


def work_with_lines(work: Work, lines: list[int]) -> Work:
    """`work` whose response names each row's CSV line, errors included."""

    def write(conn: Any) -> tuple[int, dict[str, Any]]:
        try:
            status, result = work(conn)
        except ApiError as exc:
            raise with_lines(exc, lines) from None
        _annotate(result, lines)
        return status, result

    return write
