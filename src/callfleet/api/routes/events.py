"""`/v1/batches/{id}/events` and `/v1/events`: live progress as Server-Sent Events.

The events come from the database (`store.events`), written in the transactions of the
state changes they report, so a stream sees calls run by workers on other machines.
A stream first replays what follows `Last-Event-ID` (header, or `?last_event_id=`),
then tails the table every `CALLFLEET_EVENTS_POLL_S`; an idle stream gets a comment
line every `CALLFLEET_EVENTS_HEARTBEAT_S`; it ends when the client goes away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from callfleet.api.deps import AccountDep, RuntimeDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.runtime import Runtime
from callfleet.api.schemas import documented
from callfleet.api.schemas.events import STREAM_RESPONSE
from callfleet.domain.errors import FieldError
from callfleet.store import batches as batch_store
from callfleet.store import events as event_store

router = APIRouter(tags=["events"])

MAX_EVENT_ID = 2**63 - 1

LastEventHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The `id:` of the last event received; the stream resumes after it.",
    ),
]
LastEventQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_EVENT_ID,
        description="Same as the `Last-Event-ID` header (for clients that cannot set it).",
    ),
]


def _resume_from(header: str | None, query: int | None) -> int | None:
    """The id to resume after, or None (no history asked for)."""
    if header is None or not header.strip():
        return query
    text = header.strip()
    if not text.isdigit() or int(text) > MAX_EVENT_ID:
        raise ApiError(
            400,
            "Last-Event-ID must be the id of an event this API sent (a whole number).",
            [FieldError("Last-Event-ID", f"Not an event id: {text[:40]!r}.")],
        )
    return int(text)


def _stream(request: Request, runtime: Runtime, tail: event_store.Tail) -> EventSourceResponse:
    settings = runtime.settings

    def poll() -> list[event_store.Event]:
        with runtime.db.read() as conn:
            return tail.poll(conn)

    async def events() -> AsyncIterator[ServerSentEvent]:
        while not await request.is_disconnected():
            found = await asyncio.to_thread(poll)
            for event in found:
                yield ServerSentEvent(
                    data=json.dumps(event.payload, separators=(",", ":")),
                    event=event.kind,
                    id=str(event.id),
                )
            if not found:
                await asyncio.sleep(settings.events_poll_s)

    return EventSourceResponse(
        events(),
        ping=settings.events_heartbeat_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _start(runtime: Runtime, resume: int | None, history: bool) -> int:
    """Where a stream starts: after `resume`, else the beginning (`history`) or now."""
    if resume is not None:
        return resume
    if history:
        return 0
    with runtime.db.read() as conn:
        return event_store.latest_id(conn)


@router.get(
    "/v1/batches/{batch_id}/events",
    summary="Stream a batch's progress (Server-Sent Events)",
    response_model=None,
    response_class=EventSourceResponse,
    responses={**STREAM_RESPONSE, **documented(None, 400, 401, 404)},
)
def batch_events(
    batch_id: str,
    request: Request,
    runtime: RuntimeDep,
    account: AccountDep,
    last_event_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> Any:
    resume = _resume_from(last_event_header, last_event_id)
    with runtime.db.read() as conn:
        owned(batch_store.get_batch(conn, account.id, batch_id), "batch", batch_id, "/v1/batches")
    tail = event_store.Tail(
        account.id,
        _start(runtime, resume, history=True),
        batch_id=batch_id,
        gap_grace_s=runtime.settings.events_gap_grace_s,
    )
    return _stream(request, runtime, tail)


@router.get(
    "/v1/events",
    summary="Stream the account's progress (Server-Sent Events)",
    response_model=None,
    response_class=EventSourceResponse,
    responses={**STREAM_RESPONSE, **documented(None, 400, 401)},
)
def account_events(
    request: Request,
    runtime: RuntimeDep,
    account: AccountDep,
    last_event_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> Any:
    resume = _resume_from(last_event_header, last_event_id)
    tail = event_store.Tail(
        account.id,
        _start(runtime, resume, history=False),
        gap_grace_s=runtime.settings.events_gap_grace_s,
    )
    return _stream(request, runtime, tail)
