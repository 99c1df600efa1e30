"""A batch's controls on its page: Pause, Resume (`/v1/batches/{id}/pause|resume`)
and the "Export CSV" download (`/v1/batches/{id}/export`), streamed through as the
API writes it: a 100,000-row export is never held in the dashboard's memory."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, StreamingResponse

from callfleet.dashboard.client import ApiFailure
from callfleet.dashboard.web import CtxDep, checked_form

__all__ = ["controls_router"]


def controls_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def move(request: Request, batch_id: str, ctx: CtxDep, verb: str) -> RedirectResponse:
        await checked_form(request, ctx)
        try:
            done = await ctx.api.post(f"/v1/batches/{quote(batch_id)}/{verb}")
            message = str(done.get("message") or f"Batch {done.get('batch_status')}.")
        except ApiFailure as e:
            message = e.message
        target = f"/batches/{quote(batch_id)}?{urlencode({'message': message})}"
        return RedirectResponse(target, status_code=303)

    @router.post("/batches/{batch_id}/pause")
    async def pause(request: Request, batch_id: str, ctx: CtxDep) -> RedirectResponse:
        return await move(request, batch_id, ctx, "pause")

    @router.post("/batches/{batch_id}/resume")
    async def resume(request: Request, batch_id: str, ctx: CtxDep) -> RedirectResponse:
        return await move(request, batch_id, ctx, "resume")

    @router.get("/batches/{batch_id}/export.csv")
    async def export(batch_id: str, ctx: CtxDep) -> StreamingResponse:
        upstream = await ctx.api.stream(f"/v1/batches/{quote(batch_id)}/export?format=csv")
        return StreamingResponse(
            upstream.body,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "text/csv"),
            headers={
                "Content-Disposition": upstream.headers.get(
                    "content-disposition", f'attachment; filename="batch-{batch_id}.csv"'
                )
            },
        )

    return router
