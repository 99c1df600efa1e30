"""New batch: the form, Preview (`dry_run: true`), Rehearse (`rehearsal: true`) and Send batch.

The rows go to the API as it takes them: the CSV file (or the pasted rows) uploaded as
`multipart/form-data`, the other fields as the `batch` JSON; the API parses the CSV and
names each bad row's line. Preview calls nobody and stores nothing: it shows the first
rows' rendered prompts and every row's verdict by CSV line. Rehearse sends a rehearsal
(the first rows, each calling a simulator persona) and opens its page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from callfleet.dashboard.client import ApiFailure
from callfleet.dashboard.web import CtxDep, checked_form, page
from callfleet.domain.templating import segments

__all__ = ["compose_router"]

TEXT_FIELDS = (
    "base_prompt",
    "label",
    "campaign_id",
    "first_sentence",
    "voicemail_message",
    "webhook",
)
SHOWN_BYTES = 256 * 1024
"""How much of an uploaded file is shown again in the rows box after an error."""
NO_ROWS = "No rows: paste a CSV with a header row, or choose a CSV file."
FORM_DEFAULTS = {
    "base_prompt": "",
    "rows": "",
    "label": "",
    "campaign_id": "",
    "first_sentence": "",
    "voicemail_message": "",
    "voicemail_action": "hangup",
    "max_duration": "",
    "from": "",
    "webhook": "",
    "window_start": "",
    "window_end": "",
    "record": "",
    "answered_by_enabled": "",
    "rehearsal_rows": "4",
}


async def _csv(form: FormData) -> tuple[bytes, str]:
    """The CSV to upload (the chosen file, else the pasted rows) and the text to show again."""
    upload = form.get("csv_file")
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read()
        if data:
            return data, data[:SHOWN_BYTES].decode("utf-8-sig", errors="replace")
    text = str(form.get("rows") or "")
    return text.encode(), text


def _body(values: dict[str, str]) -> dict[str, Any]:
    """The `batch` part of the `POST /v1/batches` upload the form describes."""
    body: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if values[name].strip():
            body[name] = values[name].strip()
    body["voicemail_action"] = values["voicemail_action"] or "hangup"
    if values["max_duration"].strip():
        try:
            body["max_duration"] = float(values["max_duration"])
        except ValueError:
            body["max_duration"] = values["max_duration"]  # the API explains what is wrong
    if values["from"].strip():
        body["from"] = values["from"].strip()
    if values["window_start"].strip() or values["window_end"].strip():
        body["calling_window"] = {
            "start": values["window_start"].strip() or "00:00",
            "end": values["window_end"].strip() or "24:00",
        }
    body["record"] = bool(values["record"])
    body["answered_by_enabled"] = bool(values["answered_by_enabled"])
    return body


def _errors(failure: ApiFailure) -> list[dict[str, str]]:
    """The API's error list (a row's errors already name its CSV line)."""
    return [
        {"field": str(e.get("field") or ""), "message": str(e.get("message") or "")}
        for e in failure.body.get("errors") or []
    ]


async def upload_csv(
    ctx: Any, path: str, data: bytes, batch: dict[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    """POST a CSV to the API as `multipart/form-data` (`file`, and `batch` if given)."""
    fields = {"batch": json.dumps(batch)} if batch is not None else {}
    result: tuple[int, dict[str, Any]] = await ctx.api.request(
        "POST", path, files={"file": ("rows.csv", data, "text/csv")}, data=fields
    )
    return result


def compose_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/batches/new")
    def new_form(request: Request, ctx: CtxDep) -> HTMLResponse:
        return page(request, ctx, "new_batch.html", v=FORM_DEFAULTS, errors=[], preview=None)

    @router.post("/batches/new", response_model=None)
    async def submit(request: Request, ctx: CtxDep) -> Response:
        form = await checked_form(request, ctx)
        values = {k: str(form.get(k) or "") for k in FORM_DEFAULTS if k != "rows"}
        try:
            data, values["rows"] = await _csv(form)
        finally:
            await form.close()
        preview = form.get("action") == "preview"
        if not data.strip():
            errors = [{"field": "rows", "message": NO_ROWS}]
            return page(request, ctx, "new_batch.html", 400, v=values, errors=errors, preview=None)
        body = _body(values)
        if preview:  # checks and renders; the API stores nothing and dials nobody
            body["dry_run"] = True
        elif form.get("action") == "rehearse":
            body["rehearsal"] = True
            rows_wanted = values["rehearsal_rows"].strip()
            if rows_wanted:
                body["rehearsal_rows"] = int(rows_wanted) if rows_wanted.isdigit() else rows_wanted
        status, result = await upload_csv(ctx, "/v1/batches", data, body)
        if status >= 400:
            failure = ApiFailure(status, result)
            errors = [{"field": "", "message": failure.message}, *_errors(failure)]
            return page(request, ctx, "new_batch.html", 400, v=values, errors=errors, preview=None)
        if not preview:
            return RedirectResponse(f"/batches/{result['batch_id']}", status_code=303)
        shown = {
            **result,
            "report": (result.get("validation") or {}).get("report") or [],
            "prompt": segments(values["base_prompt"]),
        }
        return page(request, ctx, "new_batch.html", v=values, errors=[], preview=shown)

    @router.post("/batches/{batch_id}/calls")
    async def append(request: Request, batch_id: str, ctx: CtxDep) -> RedirectResponse:
        form = await checked_form(request, ctx)
        upload = form.get("append_file")
        data = b""
        try:
            if isinstance(upload, UploadFile) and upload.filename:
                data = await upload.read()
        finally:
            await form.close()
        if not data.strip():
            data = str(form.get("append_rows") or "").encode()
        if not data.strip():
            message = NO_ROWS
        else:
            status, result = await upload_csv(ctx, f"/v1/batches/{batch_id}/calls", data, None)
            message = _appended(status, result)
        target = f"/batches/{quote(batch_id)}?{urlencode({'message': message})}"
        return RedirectResponse(target, status_code=303)

    return router


def _appended(status: int, result: dict[str, Any]) -> str:
    """One line for the batch page: what was appended, and each rejected row's line."""
    if status >= 400:
        failure = ApiFailure(status, result)
        details = "; ".join(e["message"] for e in _errors(failure)[:5])
        return f"Nothing appended: {failure.message}" + (f" {details}" if details else "")
    text = str(result.get("message") or "Rows appended.")
    rejected = result.get("rejected") or []
    if rejected:
        reasons = "; ".join(str(r["errors"][0]["message"]) for r in rejected[:5])
        text += f" {len(rejected)} rows not added ({reasons})."
    return text
