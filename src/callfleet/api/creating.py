"""Shared plumbing of the POSTs that create things: JSON body, idempotency, threads.

A creating route hands `respond_idempotently` a function that does its whole job
in one write transaction and returns `(status_code, body)`. This module parses the
body (a body that is not a JSON object is a 400), honours `Idempotency-Key`, and
runs the work off the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from callfleet.api import idempotency
from callfleet.api.errors import ApiError
from callfleet.api.runtime import Runtime
from callfleet.domain.errors import FieldError
from callfleet.store.accounts import Account
from callfleet.store.ids import utcnow

__all__ = ["read_json_object", "respond_idempotently"]

Work = Callable[[Connection], tuple[int, dict[str, Any]]]


async def read_json_object(request: Request) -> tuple[bytes, dict[str, Any]]:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400,
            "The request body is not valid JSON; send a JSON object with "
            "Content-Type: application/json.",
            [FieldError("body", f"JSON parse error: {exc}")],
        ) from None
    if not isinstance(body, dict):
        raise ApiError(
            400, f"The request body must be a JSON object, not a JSON {type(body).__name__}."
        )
    return raw, body


async def respond_idempotently(
    runtime: Runtime, account: Account, request: Request, raw: bytes, work: Work
) -> JSONResponse:
    key = request.headers.get("idempotency-key")
    method_path = f"{request.method} {request.url.path}"
    db = runtime.db

    def go() -> tuple[int, dict[str, Any], bool]:
        if key is not None:
            with db.write() as conn:
                replay = idempotency.reserve(
                    conn, account.id, key, method_path, idempotency.body_hash(raw), utcnow()
                )
            if replay is not None:
                return replay.status_code, replay.body, True
        try:
            with db.write() as conn:
                status_code, body = work(conn)
                if key is not None:
                    idempotency.complete(conn, account.id, key, status_code, body)
        except ApiError as exc:
            if key is not None:
                with db.write() as conn:
                    idempotency.complete(conn, account.id, key, exc.status_code, exc.body())
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
