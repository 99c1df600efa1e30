"""The batch pages: the list, one batch (with its live JSON), stopping it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from callfleet.dashboard.charts import histogram, outcome_bars
from callfleet.dashboard.client import Api, ApiFailure
from callfleet.dashboard.web import CtxDep, checked_form, page

__all__ = ["batches_router", "progress_of"]

STATUSES = (
    "queued",
    "admitted",
    "dialing",
    "live",
    "completed",
    "voicemail",
    "busy",
    "no-answer",
    "declined",
    "failed",
    "canceled",
)
"""What the status filter offers (`GET /v1/calls?status=`): the states of a call still
in dispatch, then the outcomes of an ended one."""
SHOWN_CALLS = 1000
"""The most calls the batch page's table lists (a filter narrows them server-side)."""
ANSWERED_BY = ("human", "voicemail", "unknown", "no-answer")

LISTED_BATCHES = 20
"""How many batches the list shows, each read once more for its counts (`GET
/v1/batches` has none): 21 requests a page, well inside the API's per-key rate limit
(default 50 a second)."""
LATENCY_CALLS = 20
"""How many answered calls a batch page reads for its latency histogram (the batch's
own `latency_ms` has only p50 and p95)."""


def progress_of(details: dict[str, Any]) -> dict[str, Any]:
    """Counters and the outcome mix from `GET /v1/batches/{id}`."""
    analysis = details.get("analysis") or {}
    params = details.get("batch_params") or {}
    total = int(analysis.get("total_calls") or params.get("total_calls") or 0)
    done = int(analysis.get("completed_calls") or 0)
    statuses = {k: int(v) for k, v in (analysis.get("statuses") or {}).items() if k}
    return {
        "total": total,
        "done": done,
        "live": int(analysis.get("in_progress_calls") or 0),
        "queued": int(analysis.get("queued_calls") or 0),
        "statuses": statuses,
        "percent": round(100 * done / total) if total else 0,
        "state": params.get("status") or "",
        "latency": analysis.get("latency_ms"),
    }


def _matches(call: dict[str, Any], q: str) -> bool:
    digits = "".join(ch for ch in q if ch.isdigit())
    return not digits or digits in (call.get("to") or "")


async def _filtered(
    api: Api, batch_id: str, calls: list[dict[str, Any]], status: str, answered_by: str
) -> list[dict[str, Any]]:
    """The batch's calls with `status` and `answered_by`, filtered by the API (`GET
    /v1/calls`) when either is set, so a filter sees past the first page of calls."""
    if not status and not answered_by:
        return calls
    found = await api.get(
        "/v1/calls",
        batch_id=batch_id,
        status=status,
        answered_by=answered_by,
        ascending="true",
        limit=SHOWN_CALLS,
    )
    return list(found.get("calls") or [])


async def _latency_samples(api: Api, calls: list[dict[str, Any]]) -> list[float]:
    """Every reply latency of up to `LATENCY_CALLS` answered calls (GET /v1/calls/{id})."""
    answered = [c for c in calls if c.get("completed") and c.get("answered_by")]
    found = await asyncio.gather(
        *(api.get(f"/v1/calls/{c['call_id']}") for c in answered[:LATENCY_CALLS]),
        return_exceptions=True,
    )
    samples: list[float] = []
    for call in found:
        if isinstance(call, dict) and isinstance(call.get("latency_ms"), dict):
            samples.extend(float(x) for x in call["latency_ms"].get("samples_ms") or ())
    return samples


def batches_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/batches")
    async def list_page(request: Request, ctx: CtxDep) -> HTMLResponse:
        listed = (await ctx.api.get("/v1/batches", limit=50)).get("batches", [])
        details = await asyncio.gather(
            *(ctx.api.get(f"/v1/batches/{b['batch_id']}", include_calls="false") for b in listed)
        )
        rows = [{"batch": b, **progress_of(d)} for b, d in zip(listed, details, strict=True)]
        return page(request, ctx, "batches.html", rows=rows)

    @router.get("/batches/{batch_id}/live")
    async def live(batch_id: str, ctx: CtxDep) -> JSONResponse:
        details = await ctx.api.get(
            f"/v1/batches/{batch_id}", include_transcripts="false", calls_limit=1000
        )
        progress = progress_of(details)
        calls = [
            {
                "call_id": c["call_id"],
                "status": c.get("status") or c.get("queue_status") or "",
                "answered_by": c.get("answered_by") or "",
                "call_length": c.get("call_length") or 0,
            }
            for c in details.get("call_data") or []
        ]
        svg = outcome_bars(progress["statuses"])
        return JSONResponse({**progress, "calls": calls, "outcome_svg": svg})

    @router.get("/batches/{batch_id}")
    async def batch_page(
        request: Request,
        batch_id: str,
        ctx: CtxDep,
        status: str = "",
        answered_by: str = "",
        q: str = "",
    ) -> HTMLResponse:
        details = await ctx.api.get(
            f"/v1/batches/{batch_id}", include_transcripts="false", calls_limit=SHOWN_CALLS
        )
        calls = details.get("call_data") or []
        progress = progress_of(details)
        chosen = await _filtered(ctx.api, batch_id, calls, status, answered_by)
        shown = [c for c in chosen if _matches(c, q)]
        samples = await _latency_samples(ctx.api, calls)
        return page(
            request,
            ctx,
            "batch.html",
            batch=details.get("batch_params") or {},
            p=progress,
            calls=shown,
            all_count=progress["total"] or len(calls),
            outcome_svg=outcome_bars(progress["statuses"]),
            latency_svg=histogram(samples, "Reply latency (voice to voice)"),
            filters={"status": status, "answered_by": answered_by, "q": q},
            statuses=STATUSES,
            answered=ANSWERED_BY,
            message=request.query_params.get("message"),
        )

    @router.post("/batches/{batch_id}/stop")
    async def stop(request: Request, batch_id: str, ctx: CtxDep) -> RedirectResponse:
        await checked_form(request, ctx)
        try:
            done = await ctx.api.post(f"/v1/batches/{batch_id}/stop")
            message = str(done.get("message") or "Batch stopped.")
        except ApiFailure as e:
            message = e.message
        target = f"/batches/{quote(batch_id)}?{urlencode({'message': message})}"
        return RedirectResponse(target, status_code=303)

    return router
