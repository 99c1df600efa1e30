"""Shared plumbing of the POSTs that create things: JSON body, idempotency, threads.

A creating route hands `respond_idempotently` a `Prepare`: it reads what it needs
(owned numbers, the do-not-call list) in a read transaction, judges and renders
everything, and returns the `Work` that writes the result in one write transaction
and returns `(status_code, body)`. On SQLite the write lock is thus held only to
insert, never while a 100,000-row batch is parsed and rendered (holding it that
long stalls every other writer, lease renewals included). This module parses the
body (a body that is not a JSON object is a 400), honours `Idempotency-Key`, and
runs both steps off the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from callfleet.api import idempotency
from callfleet.api.errors import ApiError, field_path
from callfleet.api.runtime import Runtime
from callfleet.clock import utcnow
from callfleet.domain.errors import FieldError
from callfleet.store.accounts import Account

__all__ = ["Prepare", "Work", "parse_json_object", "read_json_object", "respond_idempotently"]

Work = Callable[[Connection], tuple[int, dict[str, Any]]]
"""Writes what was prepared, in the one write transaction; returns the response."""
Prepare = Callable[[Connection], Work]
"""Reads and judges (in a read transaction); raises ApiError for a bad request."""

MAX_DEPTH = 64
"""How deeply a body's arrays and objects may nest (the databases' JSON has limits)."""


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _bad(value: dict[str, Any] | list[Any], depth: int, nul: bool) -> bool:
    """True if `value` nests deeper than MAX_DEPTH or (with `nul`) holds a NUL character."""
    if depth > MAX_DEPTH:
        return True
    if type(value) is dict:
        if nul and any("\x00" in k for k in value):
            return True
        items: Any = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            if _bad(item, depth + 1, nul):
                return True
        elif nul and kind is str and "\x00" in item:
            return True
    return False


def _where(value: Any, path: tuple[int | str, ...], nul: bool) -> FieldError | None:
    """The path of what `_bad` found (slow; only runs when something is wrong)."""
    if len(path) > MAX_DEPTH and isinstance(value, dict | list):
        return FieldError(field_path(path), f"Nested more than {MAX_DEPTH} levels deep.")
    if isinstance(value, str):
        if nul and "\x00" in value:
            return FieldError(field_path(path), "Contains a NUL character (\\u0000); remove it.")
        return None
    if isinstance(value, dict):
        if nul and any("\x00" in k for k in value):
            return FieldError(field_path(path) or "body", "A key contains a NUL character.")
        pairs: Any = value.items()
    elif isinstance(value, list):
        pairs = enumerate(value)
    else:
        return None
    for key, item in pairs:
        found = _where(item, (*path, key), nul)
        if found is not None:
            return found
    return None


def _unstorable(body: dict[str, Any], raw: bytes) -> FieldError | None:
    """The first NUL character (no database stores one) or over-deep nesting in `body`."""
    nul = b"\\u0000" in raw  # the only way to write a NUL in JSON
    if not _bad(body, 0, nul):
        return None
    return _where(body, (), nul)


async def read_json_object(request: Request) -> tuple[bytes, dict[str, Any]]:
    raw = await request.body()
    return raw, parse_json_object(raw)


def parse_json_object(raw: bytes, where: str = "body") -> dict[str, Any]:
    """`raw` as a JSON object, or a 400 naming `where` (the body, or a form field)."""
    what = "request body" if where == "body" else f"`{where}` form field"
    if not raw.strip():
        raise ApiError(
            400,
            f"The {what} is empty; send a JSON object.",
            [FieldError(where, "Required: a JSON object.")],
        )
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(
            400,
            f"The {what} is not valid JSON; send a JSON object"
            + (" with Content-Type: application/json." if where == "body" else "."),
            [FieldError(where, f"JSON parse error: {reason}")],
        ) from None
    if not isinstance(body, dict):
        kinds: dict[type, str] = {list: "an array", str: "a string", bool: "a boolean"}
        kind = kinds.get(type(body), "a number" if isinstance(body, int | float) else "null")
        raise ApiError(
            400,
            f"The {what} must be a JSON object, not {kind}.",
            [FieldError(where, f"Must be a JSON object, got {kind}.")],
        )
    problem = _unstorable(body, raw)
    if problem is not None:
        raise ApiError(400, f"{problem.field}: {problem.message}", [problem])
    return body


async def respond_idempotently(
    runtime: Runtime, account: Account, request: Request, raw: bytes, prepare: Prepare
) -> JSONResponse:
    key = request.headers.get("idempotency-key")
    method_path = f"{request.method} {request.url.path}"
    db = runtime.db
    ttl = timedelta(hours=runtime.settings.idempotency_ttl_hours)
    keep_rejected = runtime.settings.idempotency_replay_rejected

    def go() -> tuple[int, dict[str, Any], bool]:
        if key is not None:
            with db.write() as conn:
                replay = idempotency.reserve(
                    conn,
                    account.id,
                    key,
                    method_path,
                    idempotency.body_hash(raw),
                    utcnow(),
                    ttl=ttl,
                )
            if replay is not None:
                return replay.status_code, replay.body, True
        try:
            with db.read() as conn:
                work = prepare(conn)
            with db.write() as conn:
                status_code, body = work(conn)
                if key is not None:
                    idempotency.complete(conn, account.id, key, status_code, body)
        except ApiError as exc:
            if key is not None:
                with db.write() as conn:
                    idempotency.complete(
                        conn,
                        account.id,
                        key,
                        exc.status_code,
                        exc.body(),
                        replay_rejected=keep_rejected,
                    )
            raise
        except BaseException:
            if key is not None:
                with db.write() as conn:
                    idempotency.release(conn, account.id, key)
            raise
        return status_code, body, False

    status_code, body, replayed = await run_in_threadpool(go)
    headers = {"idempotent-replayed": "true"} if replayed else None
    return JSONResponse(body, status_code=status_code, headers=headers)
