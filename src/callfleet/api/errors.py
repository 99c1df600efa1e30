"""The error envelope, and the handlers that put every failure into it.

Every 4xx reads `{"status": "error", "message": ..., "errors": [{"field", "message"}]}`;
the message is one sentence a person can act on. Validation errors from pydantic
(including a body that is not JSON) are rewritten into field paths such as
`call_data[3].phone_number`. An unexpected exception becomes a 500 with a reference
id, never a stack trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callfleet.domain.errors import FieldError

__all__ = ["ApiError", "BodyCap", "field_path", "install_error_handlers", "pydantic_errors"]

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An error the client can act on; rendered in the error envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.errors = list(errors)
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {
            "status": "error",
            "message": self.message,
            "errors": [{"field": e.field, "message": e.message} for e in self.errors],
        }


def field_path(loc: Sequence[int | str]) -> str:
    """("call_data", 3, "phone_number") -> "call_data[3].phone_number"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown(got: Any) -> str:
    return repr(got) if got is not None and len(repr(got)) <= 80 else type(got).__name__


def _describe(err: dict[str, Any]) -> str:
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid value"))
    if kind == "missing":
        return "This field is required."
    if kind == "json_invalid":
        return "The body is not valid JSON; send a JSON object with Content-Type: application/json."
    if kind == "extra_forbidden":
        return "Unknown field; remove it."
    return f"{msg[0].upper()}{msg[1:]} (got {_shown(err.get('input'))})."


# The member names pydantic puts after a union field (`voice_id: str | int`) in `loc`.
_UNION_MEMBERS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "dict": "an object",
    "list": "an array",
}


def _union_member(part: int | str) -> str | None:
    """`dict[str,any]` -> "an object"; None if `part` is not a union member's name."""
    return _UNION_MEMBERS.get(part.split("[", 1)[0]) if isinstance(part, str) else None


def pydantic_errors(
    errors: Sequence[Any], prefix: Sequence[int | str] = (), unions: Collection[str] = ()
) -> list[FieldError]:
    """Translate pydantic's error list into our FieldErrors (body prefix dropped).

    `unions` names the model's fields typed as a union (`str | int`): pydantic reports
    each member that failed under the member's name, merged here into one error.
    """
    out: list[FieldError] = []
    failed: dict[str, list[str]] = {}  # field -> the union members it failed
    for err in errors:
        loc = list(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        # pydantic puts the union/function branch name in the path; keep only real keys.
        loc = [p for p in loc if isinstance(p, int) or not str(p).startswith("function-")]
        member = None
        if len(loc) == 2 and loc[0] in unions and _union_member(loc[1]):
            member = _union_member(loc.pop())
        field = field_path([*prefix, *loc]) or "body"
        if member is None:
            out.append(FieldError(field, _describe(err)))
            continue
        if field not in failed:
            failed[field] = []
            out.append(FieldError(field, ""))
        failed[field].append(member)
        index = next(i for i, e in enumerate(out) if e.field == field)
        wanted = " or ".join(failed[field])
        out[index] = FieldError(field, f"Must be {wanted} (got {_shown(err.get('input'))}).")
    return out


class RejectNulInUrl:
    """Answer 400 to a URL holding a NUL character (%00), which PostgreSQL cannot compare."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            body = ApiError(400, "The URL contains a NUL character (%00); remove it.").body()
            await JSONResponse(body, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyCap:
    """Answer 413 to a request body over `limit` bytes, counted while it is read.

    A declared Content-Length over the limit is refused before reading; otherwise the
    body (chunked or not) is read up to the limit and handed on whole, so no route can
    be made to buffer more than `limit` bytes, whatever the headers say.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ApiError(
            413,
            f"The request body is larger than {self.limit} bytes, the limit this server "
            "accepts (CALLFLEET_MAX_BODY_BYTES); split a batch into several "
            "(a campaign_id groups them).",
            [FieldError("body", f"At most {self.limit} bytes.")],
        )
        response = JSONResponse(error.body(), status_code=413, headers={"connection": "close"})
        await response(scope, receive, send)

    def _declared(self, scope: Scope) -> int | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = self._declared(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RejectNulInUrl)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = pydantic_errors(exc.errors())
        if any(e.message.startswith("The body is not valid JSON") for e in errors):
            message = "The request body is not valid JSON."
        else:
            names = ", ".join(e.field for e in errors[:5])
            message = f"The request has invalid fields: {names}. See `errors` for each one."
        return JSONResponse(ApiError(400, message, errors).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint; see /docs for the API."
        elif exc.status_code == 405:
            message = "This method is not allowed on this path; see /docs for the API."
        return JSONResponse(
            {"status": "error", "message": message, "errors": []},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error", ref=ref, path=request.url.path, exc_info=exc)
        return JSONResponse(
            {
                "status": "error",
                "message": f"Internal error (reference {ref}); the server log has the details.",
            },
            status_code=500,
        )
