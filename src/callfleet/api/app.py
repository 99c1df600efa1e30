"""The FastAPI application: routes, error envelope, and (optionally) the dispatcher.

`create_app(settings)` builds the app; given `services` (what `callfleet serve`
does, through `callfleet.wiring.create_app`) its lifespan also runs the dispatcher
and the webhook sender on the same event loop, so one process is a whole callfleet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI

from callfleet import __version__
from callfleet.api.errors import BodyCap, install_error_handlers
from callfleet.api.routes import (
    analysis,
    batches,
    calls,
    dnc,
    events,
    numbers,
    ops,
    recordings,
    trunks,
    webhooks,
)
from callfleet.api.runtime import Runtime
from callfleet.api.schemas import finish_openapi
from callfleet.config import Settings
from callfleet.dispatch.service import Dispatcher
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.webhooks.sender import WebhookSender

__all__ = ["Services", "ServicesFactory", "create_app"]

log = structlog.get_logger(__name__)

API_DESCRIPTION = """\
A drop-in replacement for a hosted product's batch-calling API: the same paths, field
names and envelopes. Send the API key in the `authorization` header (raw or `Bearer`).
Unknown request fields are accepted, ignored and listed in the response's `warnings`;
known fields are validated strictly. Every 4xx answers in the error envelope
`{"status": "error", "message": ..., "errors": [{"field", "message"}]}`. The POSTs that
create something honour an `Idempotency-Key` header.
"""


@dataclass(frozen=True)
class Services:
    """What an API process runs beside its routes when it also dispatches calls."""

    dispatcher: Dispatcher
    sender: WebhookSender


ServicesFactory = Callable[[Database], Services]
"""Builds the process's services on its database at start-up (`callfleet.wiring`)."""


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    services: ServicesFactory | None = None,
) -> FastAPI:
    database = db or Database(settings.sqlalchemy_url)
    runtime = Runtime(settings=settings, db=database)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, database)
        runtime.loop = asyncio.get_running_loop()
        if services is not None:
            built = services(database)
            log.info("carrier", carrier=built.dispatcher.carrier.describe())
            runtime.dispatcher, runtime.sender = built.dispatcher, built.sender
            await runtime.dispatcher.start()
            await runtime.sender.start()
        try:
            yield
        finally:
            if runtime.dispatcher is not None:
                await runtime.dispatcher.stop()
                await runtime.dispatcher.carrier.close()
            if runtime.sender is not None:
                await runtime.sender.stop()
            if db is None:
                database.dispose()

    app = FastAPI(
        title="callfleet",
        version=__version__,
        summary="Self-hosted AI phone calls in bulk, behind a drop-in batch-calling API.",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(BodyCap, limit=settings.max_body_bytes)
    for module in (
        batches,
        events,
        calls,
        recordings,
        analysis,
        numbers,
        trunks,
        dnc,
        webhooks,
        ops,
    ):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with `finish_openapi`'s touches, built once."""
    if app.openapi_schema is None:
        finish_openapi(FastAPI.openapi(app))  # FastAPI keeps it in app.openapi_schema
    assert app.openapi_schema is not None
    return app.openapi_schema
