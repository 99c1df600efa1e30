"""The operator's dashboard, served at `/` by `callfleet serve`.

Server-rendered Jinja2 pages with plain CSS and a little vanilla JS (no Node, no
CDN). It is a client of the public API and of nothing else: each handler calls
`/v1/...` in-process with the signed-in user's key (`client.Api`), so it never
reads the store. `callfleet.wiring` mounts it on the API app with
`install_dashboard`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from callfleet.dashboard.batches import batches_router
from callfleet.dashboard.client import ApiFailure, NotSignedIn
from callfleet.dashboard.compose import compose_router
from callfleet.dashboard.controls import controls_router
from callfleet.dashboard.events import events_router
from callfleet.dashboard.records import records_router
from callfleet.dashboard.session import COOKIE, SessionCodec
from callfleet.dashboard.web import CsrfRefused, Dash, sign_in_router

__all__ = ["install_dashboard"]

HERE = Path(__file__).parent
STATIC_PATH = "/dashboard-static"


def install_dashboard(app: FastAPI, *, secret_material: str, secure_cookies: bool = False) -> None:
    """Mount the dashboard on `app` (the API app it calls in-process). Its session
    keys derive from `secret_material`, the server's secret."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["static"] = STATIC_PATH
    templates.env.filters["when"] = when
    templates.env.filters["pct"] = pct
    app.state.dashboard = Dash(
        api_app=app,
        codec=SessionCodec(secret_material),
        templates=templates,
        secure_cookies=secure_cookies,
    )
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="dashboard-static")
    for router in (sign_in_router(), compose_router(), batches_router(), records_router()):
        app.include_router(router)
    app.include_router(events_router())
    app.include_router(controls_router())
    app.add_exception_handler(NotSignedIn, _to_sign_in)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(ApiFailure, _api_failure)
    # Each page makes in-process API requests; httpx would log every one at INFO
    # beside the server's own access log.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def when(value: object) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS UTC` (the API answers in UTC); `—` for none."""
    if not value:
        return "—"
    text = str(value)
    return f"{text[:10]} {text[11:19]} UTC" if len(text) >= 19 else text


def pct(value: object) -> str:
    """A rate in 0..1 as a whole percentage; `—` when there is none yet."""
    if value is None:
        return "—"
    try:
        return f"{float(str(value)) * 100:.0f} %"
    except ValueError:
        return "—"


def _wants_json(request: Request) -> bool:
    return request.url.path.endswith("/live")


async def _to_sign_in(request: Request, _exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"message": "Signed out."}, status_code=401)
    target = "/sign-in"
    if request.cookies.get(COOKIE):
        target += "?" + urlencode({"error": "Your session ended; sign in again."})
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def _csrf_refused(request: Request, _exc: Exception) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Refused</title><h1>Refused</h1><p>This form was not sent "
        'from a page of this dashboard (missing or wrong CSRF token). <a href="/">Back</a></p>',
        status_code=403,
    )


async def _api_failure(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiFailure)
    if _wants_json(request):
        return JSONResponse({"message": exc.message}, status_code=exc.status)
    dash: Dash = request.app.state.dashboard
    session = dash.codec.load(request.cookies.get(COOKIE))
    csrf = session.csrf if session else ""
    context = {
        "csrf": csrf,
        "signed_in": session is not None,
        "status": exc.status,
        "message": exc.message,
    }
    return dash.templates.TemplateResponse(request, "error.html", context, status_code=exc.status)
