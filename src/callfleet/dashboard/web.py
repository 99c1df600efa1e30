"""The dashboard's plumbing: templates, the session dependency, CSRF, sign-in and out."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.types import ASGIApp

from callfleet.dashboard.client import Api, NotSignedIn
from callfleet.dashboard.session import COOKIE, MAX_AGE_S, Session, SessionCodec

__all__ = ["CsrfRefused", "Ctx", "CtxDep", "Dash", "checked_form", "page", "sign_in_router"]

PRE_COOKIE = "callfleet_signin"


class CsrfRefused(Exception):
    """A POST without the session's CSRF token."""


@dataclass(frozen=True)
class Dash:
    """What every dashboard handler shares: the API app it calls and its secrets."""

    api_app: ASGIApp
    codec: SessionCodec
    templates: Jinja2Templates
    secure_cookies: bool = False


@dataclass(frozen=True)
class Ctx:
    dash: Dash
    session: Session
    api: Api


def dash_of(request: Request) -> Dash:
    dash: Dash = request.app.state.dashboard
    return dash


def current(request: Request) -> Ctx:
    dash = dash_of(request)
    session = dash.codec.load(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn()
    return Ctx(dash, session, Api(dash.api_app, session.api_key))


CtxDep = Annotated[Ctx, Depends(current)]


async def checked_form(request: Request, ctx: Ctx) -> FormData:
    form = await request.form()
    sent = form.get("csrf")
    if not ctx.dash.codec.csrf_ok(ctx.session, sent if isinstance(sent, str) else None):
        await form.close()  # an uploaded file's spooled copy goes now, not at collection
        raise CsrfRefused()
    return form


def page(
    request: Request, ctx: Ctx | None, name: str, status: int = 200, **values: Any
) -> HTMLResponse:
    dash = ctx.dash if ctx else dash_of(request)
    context = {"csrf": ctx.session.csrf if ctx else "", "signed_in": ctx is not None, **values}
    return dash.templates.TemplateResponse(request, name, context, status_code=status)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """HttpOnly, SameSite=Strict; Secure when the page came over HTTPS (or always, with
    `secure_cookies`)."""
    dash = dash_of(request)
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=dash.secure_cookies or request.url.scheme == "https",
        path="/",
    )


def sign_in_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/sign-in")
    def sign_in_form(request: Request, error: str | None = None) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = page(request, None, "sign_in.html", signin_token=token, error=error)
        _set_cookie(request, response, PRE_COOKIE, token, 3600)
        return response

    @router.post("/sign-in", response_model=None)
    async def sign_in(request: Request) -> Response:
        dash = dash_of(request)
        form = await request.form()
        expected = request.cookies.get(PRE_COOKIE) or ""
        sent = form.get("signin_token")
        if not expected or not isinstance(sent, str) or not secrets.compare_digest(expected, sent):
            raise CsrfRefused()
        key = str(form.get("api_key") or "").strip()
        try:
            if not key:
                raise NotSignedIn()
            await Api(dash.api_app, key).get("/v1/batches", limit=1)
        except NotSignedIn:
            return page(
                request,
                None,
                "sign_in.html",
                status=401,
                signin_token=expected,
                error="That API key is unknown or revoked. Check it and try again.",
            )
        response = RedirectResponse("/batches", status_code=303)
        _set_cookie(request, response, COOKIE, dash.codec.dump(dash.codec.new(key)), MAX_AGE_S)
        response.delete_cookie(PRE_COOKIE, path="/")
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request, ctx: CtxDep) -> RedirectResponse:
        await checked_form(request, ctx)
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @router.get("/")
    def home(request: Request) -> RedirectResponse:
        signed_in = dash_of(request).codec.load(request.cookies.get(COOKIE)) is not None
        return RedirectResponse("/batches" if signed_in else "/sign-in", status_code=303)

    return router
