"""A batch's live progress for the browser: the API's event stream, passed through.

The browser's `EventSource` cannot send the API key, so the dashboard opens
`GET /v1/batches/{id}/events` in-process with the signed-in user's key and relays
its bytes as they come (`Last-Event-ID` forwarded, so the browser's own reconnects
resume without gaps). httpx's ASGI transport reads a body to its end, which a stream
never has, so this module speaks ASGI to the API app directly: still a request to
the public API, with its auth, tenancy and validation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message

from callfleet.dashboard.web import CtxDep

__all__ = ["events_router"]


class _ApiStream:
    """One streamed GET to the API app: its start message, then its body's chunks."""

    def __init__(self, app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"callfleet.internal"), *headers],
            "client": ("127.0.0.1", 0),
            "server": ("callfleet.internal", 80),
        }
        self.app = app
        self.started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        self.gone = asyncio.Event()
        self._asked = False
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started.set_result(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await self.chunks.put(message["body"])
            if not message.get("more_body", False):
                await self.chunks.put(None)

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        finally:
            if not self.started.done():
                self.started.set_exception(RuntimeError("the API sent no response"))
            with contextlib.suppress(asyncio.QueueFull):
                self.chunks.put_nowait(None)

    async def open(self) -> Message:
        self.task = asyncio.create_task(self._run())
        return await self.started

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self.chunks.get()) is not None:
                yield chunk
        finally:
            await self.close()

    async def close(self) -> None:
        self.gone.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                self.task.cancel()


def events_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/batches/{batch_id}/events")
    async def batch_events(batch_id: str, request: Request, ctx: CtxDep) -> Response:
        headers = [(b"authorization", ctx.session.api_key.encode())]
        last = request.headers.get("last-event-id")
        if last:
            headers.append((b"last-event-id", last.encode()[:40]))
        stream = _ApiStream(ctx.dash.api_app, f"/v1/batches/{batch_id}/events", headers)
        start = await stream.open()
        if start["status"] != 200:
            body = b"".join([c async for c in stream.body()])
            return Response(body, status_code=start["status"], media_type="application/json")
        return StreamingResponse(
            stream.body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
