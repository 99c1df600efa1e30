"""A call's recording (stream with `Range`, presigned redirect, delete) and erasure.

`GET /v1/calls/{id}/recording` checks the account first, then streams the object
from the storage with `Range` support (206, `Content-Range`, `Accept-Ranges`), or,
with `CALLFLEET_STORAGE_PRESIGN=true` and object storage, answers 307 to a
short-lived presigned URL. `DELETE` removes the object and says so in the call.
`POST /v1/erasure` erases what the account holds about one phone number
(`store/erasure.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep, StorageDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.runtime import Runtime
from callfleet.api.schemas import documented, json_body
from callfleet.api.schemas.calls import WAV_FILE, CallDetails
from callfleet.api.schemas.erasure import ErasureRequest, ErasureResponse
from callfleet.clock import utcnow
from callfleet.dispatch.lifecycle import cancel_queued
from callfleet.domain.byte_ranges import Unsatisfiable, parse_range
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import PhoneNumberError, normalize_phone
from callfleet.storage import ObjectMissing, Storage, StorageError, content_type, locate
from callfleet.store import erasure as erasure_store
from callfleet.store import recordings as rec_store
from callfleet.store.recordings import REMOVED_STATES, RecordingState
from callfleet.store.secrets import SecretBox
from callfleet.store.tables import calls
from callfleet.store.views import call_details

router = APIRouter(tags=["recordings and erasure"])

_WHY_REMOVED = {
    RecordingState.DELETED: "it was deleted (DELETE /v1/calls/{id}/recording)",
    RecordingState.EXPIRED: "it passed its retention (retention_days) and was deleted",
    RecordingState.ERASED: "it was erased on request (POST /v1/erasure)",
    RecordingState.LOST: "its file vanished from the worker before it could be uploaded",
}


def _stored_key(row: Any) -> str:
    """The recording's key, or the error saying why there is none to send."""
    if row.recording_state in REMOVED_STATES:
        when = row.recording_removed_at.isoformat() if row.recording_removed_at else "earlier"
        raise ApiError(410, f"The recording is gone: {_WHY_REMOVED[row.recording_state]} ({when}).")
    if row.recording_state == RecordingState.UPLOADING:
        raise ApiError(
            503,
            "The recording is still being uploaded from the machine that carried the call; "
            "try again shortly.",
            headers={"Retry-After": "5"},
        )
    if not row.recording_path:
        reason = (
            "recording was not requested (send `record: true`)"
            if not row.record
            else "the call has no recording (it was not answered, or has not ended yet)"
        )
        raise ApiError(404, f"No recording for this call: {reason}.")
    return str(row.recording_path)


@router.get(
    "/v1/calls/{call_id}/recording",
    summary="Download a call's recording",
    response_model=None,
    response_class=StreamingResponse,
    responses={
        200: WAV_FILE,
        206: {**WAV_FILE, "description": "The requested byte range of the recording (`Range`)."},
        307: {"description": "A short-lived presigned URL (CALLFLEET_STORAGE_PRESIGN=true)."},
        **documented(None, 400, 401, 404, 410, 416, 503),
    },
)
def get_recording(
    call_id: str, request: Request, runtime: RuntimeDep, account: AccountDep, storage: StorageDep
) -> Response:
    with runtime.db.read() as conn:
        row = owned(rec_store.recording_of(conn, account.id, call_id), "call", call_id, "/v1/calls")
    where, key = locate(storage, _stored_key(row))
    settings = runtime.settings
    if settings.storage_presign:
        url = where.presign(key, settings.storage_presign_ttl_s)
        if url is not None:
            return RedirectResponse(url, 307, headers={"Cache-Control": "no-store"})
    return _stream(where, key, request.headers.get("range"))


def _stream(where: Storage, key: str, range_header: str | None) -> Response:
    missing = ApiError(404, "No recording for this call: its object is missing from the storage.")
    try:
        size = where.size(key)
    except StorageError as exc:
        raise ApiError(503, f"The recording's storage did not answer: {exc}") from exc
    if size is None:
        raise missing
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"}
    media = content_type(key)
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        raise ApiError(
            416,
            f"The range {range_header!r} starts past the recording's end ({size} bytes).",
            headers={"Content-Range": f"bytes */{size}", **headers},
        ) from None
    if size == 0:
        return Response(b"", media_type=media, headers=headers)
    start, end = (wanted.start, wanted.end) if wanted else (0, size - 1)
    try:
        body = where.read(key, start, end)
    except ObjectMissing:
        raise missing from None
    except StorageError as exc:
        raise ApiError(503, f"The recording's storage did not answer: {exc}") from exc
    headers["Content-Length"] = str(end - start + 1)
    if wanted is None:
        return StreamingResponse(body, 200, media_type=media, headers=headers)
    headers["Content-Range"] = wanted.content_range(size)
    return StreamingResponse(body, 206, media_type=media, headers=headers)


@router.delete(
    "/v1/calls/{call_id}/recording",
    summary="Delete a call's recording",
    response_model=None,
    responses=documented(CallDetails, 400, 401, 404, 503),
)
def delete_recording(
    call_id: str, runtime: RuntimeDep, account: AccountDep, storage: StorageDep
) -> dict[str, Any]:
    with runtime.db.read() as conn:
        row = owned(rec_store.recording_of(conn, account.id, call_id), "call", call_id, "/v1/calls")
    if row.recording_state not in REMOVED_STATES:
        if not row.recording_path:
            raise ApiError(404, "This call has no recording to delete.")
        try:  # first the objects, then the record: never a dangling "deleted"
            for stored in rec_store.recording_keys(call_id, row.attempt, row.recording_path):
                where, key = locate(storage, stored)
                where.delete(key)
        except StorageError as exc:
            raise ApiError(503, f"The storage did not delete the recording; retry: {exc}") from exc
        with runtime.db.write() as conn:
            rec_store.mark_removed(conn, [call_id], RecordingState.DELETED, utcnow())
    with runtime.db.read() as conn:
        details = call_details(conn, call_id)
    assert details is not None
    return {k: v for k, v in details.items() if not k.startswith("_")}


def _number(body: dict[str, Any]) -> str:
    raw = body.get("phone_number")
    if raw is None:
        raise ApiError(
            400,
            "Send the `phone_number` whose data to erase.",
            [FieldError("phone_number", "Required.")],
        )
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ApiError(
            400,
            "phone_number must be a phone number string.",
            [FieldError("phone_number", "Must be a phone number string, e.g. +12125550123.")],
        )
    try:
        return normalize_phone(raw)
    except PhoneNumberError as exc:
        raise ApiError(
            400, f"Nothing was erased: {exc.reason}", [FieldError("phone_number", exc.reason)]
        ) from None


@router.post(
    "/v1/erasure",
    summary="Erase what the account holds about a phone number",
    response_model=None,
    responses=documented(ErasureResponse, 400, 401, 503),
    openapi_extra=json_body(ErasureRequest),
)
async def erase(
    request: Request, runtime: RuntimeDep, account: AccountDep, storage: StorageDep
) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    number = _number(body)
    fingerprint = SecretBox.from_settings(runtime.settings).fingerprint(f"{account.id}:{number}")
    key_id = getattr(request.state, "key_id", None)
    return await asyncio.to_thread(
        _erase, runtime, account.id, number, fingerprint, key_id, storage
    )


def _erase(
    runtime: Runtime,
    account_id: str,
    number: str,
    fingerprint: str,
    key_id: str | None,
    storage: Storage,
) -> dict[str, Any]:
    now = utcnow()
    hashed = erasure_store.erased_number(fingerprint)
    with runtime.db.write() as conn:
        # On the list first, so nothing new is queued; then calls not yet dialled end.
        added = erasure_store.add_erasure_dnc(conn, account_id, number, now)
        where = (calls.c.account_id == account_id) & (calls.c.to_number == number)
        cancel_queued(conn, where, now, "Cancelled: the number's data was erased on request.")
    with runtime.db.read() as conn:
        found = erasure_store.find_calls(conn, account_id, number, hashed)
    for key in found.recording_keys:
        holder, name = locate(storage, key)
        try:
            holder.delete(name)
        except StorageError as exc:
            raise ApiError(
                503,
                "The storage did not delete a recording; nothing else was erased yet, "
                f"retry: {exc}",
            ) from exc
    with runtime.db.write() as conn:
        done = erasure_store.erase(
            conn,
            found,
            account_id=account_id,
            number=number,
            fingerprint=fingerprint,
            key_id=key_id,
            now=now,
        )
    return {
        "status": "success",
        "phone_number": number,
        "erased_as": hashed,
        "calls": len(done.calls),
        "recordings": done.recordings,
        "transcript_turns": done.transcript_turns,
        "summaries": done.summaries,
        "analyses": done.analyses,
        "row_properties": done.row_properties,
        "live_calls": done.live_calls,
        "added_to_dnc": added or done.added_to_dnc,
    }
