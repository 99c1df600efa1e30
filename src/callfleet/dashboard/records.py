"""A call's page (and its recording, proxied), do-not-call (with a CSV upload), and numbers."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from callfleet.dashboard.client import ApiFailure
from callfleet.dashboard.compose import upload_csv
from callfleet.dashboard.web import CtxDep, checked_form, page

__all__ = ["records_router"]

PASSED_HEADERS = ("content-type", "content-length", "content-range", "accept-ranges", "location")
"""`location`: with CALLFLEET_STORAGE_PRESIGN the API redirects to a presigned URL."""
SHOWN_DELIVERIES = 10
"""Deliveries read with their attempt logs per call page (one request each)."""


async def _deliveries(ctx: CtxDep, call_id: str) -> list[dict[str, Any]]:
    """The call's webhook deliveries, each with its attempt log."""
    listed = (await ctx.api.get("/v1/webhooks/deliveries", call_id=call_id)).get("deliveries")
    found = await asyncio.gather(
        *(
            ctx.api.get(f"/v1/webhooks/deliveries/{d['id']}")
            for d in (listed or [])[:SHOWN_DELIVERIES]
        )
    )
    return [f.get("delivery") or {} for f in found]


def records_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/calls/{call_id}")
    async def call_page(request: Request, call_id: str, ctx: CtxDep) -> HTMLResponse:
        call = await ctx.api.get(f"/v1/calls/{call_id}")
        deliveries = await _deliveries(ctx, call_id)
        return page(request, ctx, "call.html", call=call, deliveries=deliveries)

    @router.get("/calls/{call_id}/recording")
    async def recording(request: Request, call_id: str, ctx: CtxDep) -> Response:
        wanted = {"range": request.headers["range"]} if "range" in request.headers else {}
        got = await ctx.api.raw(f"/v1/calls/{call_id}/recording", wanted)
        headers = {k: v for k, v in got.headers.items() if k.lower() in PASSED_HEADERS}
        return Response(got.content, status_code=got.status_code, headers=headers)

    _add_dnc_routes(router)

    @router.get("/numbers")
    async def numbers_page(request: Request, ctx: CtxDep) -> HTMLResponse:
        numbers, trunks = await asyncio.gather(
            ctx.api.get("/v1/numbers"), ctx.api.get("/v1/trunks")
        )
        return page(
            request,
            ctx,
            "numbers.html",
            numbers=numbers.get("numbers") or [],
            trunks=trunks.get("trunks") or [],
            message=request.query_params.get("message"),
        )

    @router.post("/numbers/resume")
    async def number_resume(request: Request, ctx: CtxDep) -> RedirectResponse:
        form = await checked_form(request, ctx)
        number = str(form.get("phone_number") or "")
        try:
            await ctx.api.post(f"/v1/numbers/{quote(number, safe='')}/resume")
            message = f"{number} is in use again."
        except ApiFailure as e:
            message = e.message
        return RedirectResponse("/numbers?" + urlencode({"message": message}), status_code=303)

    return router


def _add_dnc_routes(router: APIRouter) -> None:
    """The do-not-call page: list and search, add one, upload a CSV, remove one."""

    @router.get("/dnc")
    async def dnc_page(request: Request, ctx: CtxDep, q: str = "") -> HTMLResponse:
        entries = (await ctx.api.get("/v1/dnc", limit=1000)).get("entries") or []
        digits = "".join(ch for ch in q if ch.isdigit())
        shown = [e for e in entries if not digits or digits in str(e.get("phone_number"))]
        message = request.query_params.get("message")
        return page(request, ctx, "dnc.html", entries=shown, q=q, message=message)

    @router.post("/dnc")
    async def dnc_add(request: Request, ctx: CtxDep) -> RedirectResponse:
        form = await checked_form(request, ctx)
        number = str(form.get("phone_number") or "").strip()
        body: dict[str, Any] = {"phone_number": number}
        if str(form.get("reason") or "").strip():
            body["reason"] = str(form.get("reason")).strip()
        try:
            await ctx.api.post("/v1/dnc", body)
            message = f"Added {number} to the do-not-call list."
        except ApiFailure as e:
            details = "; ".join(str(x.get("message")) for x in e.body.get("errors") or [])
            message = f"{e.message} {details}".strip()
        return RedirectResponse("/dnc?" + urlencode({"message": message}), status_code=303)

    @router.post("/dnc/upload")
    async def dnc_upload(request: Request, ctx: CtxDep) -> RedirectResponse:
        form = await checked_form(request, ctx)
        upload = form.get("dnc_file")
        try:
            data = await upload.read() if isinstance(upload, UploadFile) else b""
        finally:
            await form.close()
        if not data.strip():
            message = "No file: choose a CSV of numbers with a header row."
        else:
            reason = str(form.get("reason") or "").strip()
            status, result = await upload_csv(
                ctx, "/v1/dnc", data, {"reason": reason} if reason else None
            )
            message = _uploaded(status, result)
        return RedirectResponse("/dnc?" + urlencode({"message": message}), status_code=303)

    @router.post("/dnc/remove")
    async def dnc_remove(request: Request, ctx: CtxDep) -> RedirectResponse:
        form = await checked_form(request, ctx)
        number = str(form.get("phone_number") or "")
        try:
            await ctx.api.delete(f"/v1/dnc/{quote(number, safe='')}")
            message = f"Removed {number} from the do-not-call list."
        except ApiFailure as e:
            message = e.message
        return RedirectResponse("/dnc?" + urlencode({"message": message}), status_code=303)


def _uploaded(status: int, result: dict[str, Any]) -> str:
    """One line for the do-not-call page: what a CSV upload added and each bad row's line."""
    if status >= 400:
        failure = ApiFailure(status, result)
        details = "; ".join(str(e.get("message")) for e in (result.get("errors") or [])[:5])
        return f"Nothing added: {failure.message}" + (f" {details}" if details else "")
    text = str(result.get("message") or "Numbers added.")
    rejected = result.get("rejected") or []
    if rejected:
        lines = "; ".join(str(r["errors"][0]["message"]) for r in rejected[:5])
        more = f" and {len(rejected) - 5} more" if len(rejected) > 5 else ""
        text += f" Not added: {lines}{more}."
    return text
