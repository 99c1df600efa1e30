"""Operations endpoints: `/healthz`, `/readyz`, `/metrics`. No API key needed.

- `/healthz`: the process is alive and serving (no database involved), for a
  liveness probe.
- `/readyz`: the database answers and its schema is at the newest migration (and,
  with the procrastinate engine, procrastinate's schema is present), and this
  process's AI agent has its speech engines loaded and warm; 503 with the reason
  otherwise, for a readiness probe or a load balancer.
- `/metrics`: Prometheus text exposition: the database gauges (calls by status,
  live calls per account and per worker, hopper lag, webhook backlog), this
  process's dispatcher counters (admitted calls, pass times, leadership) and the
  process collector. Without `CALLFLEET_METRICS_TOKEN` it is open and live calls
  are one total (no account ids); with it, it needs `Authorization: Bearer <token>`
  and live calls are per account.

`/readyz` never echoes the database's own error text (it holds host names, users,
ports); the error goes to the log.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, ProcessCollector

from callfleet.api.runtime import Runtime
from callfleet.api.schemas import documented
from callfleet.api.schemas.ops import Health, Readiness
from callfleet.metrics import CONTENT_TYPE, DatabaseCollector, render
from callfleet.store.schema_check import migration_problem

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 3.0


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get(
    "/healthz",
    summary="Liveness: the process is up",
    response_model=None,
    responses=documented(Health),
)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable, schema current, agent warm",
    responses={
        **documented(Readiness),
        503: {"model": Readiness, "description": "Not ready; `reason` says why."},
    },
)
async def readyz(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    use_procrastinate = runtime.settings.engine == "procrastinate"
    try:
        problem = await asyncio.wait_for(
            asyncio.to_thread(migration_problem, runtime.db, procrastinate=use_procrastinate),
            READY_TIMEOUT_S,
        )
    except TimeoutError:
        problem = f"the database did not answer within {READY_TIMEOUT_S:g} s"
    except Exception as exc:
        log.warning("readyz: database check failed", error=str(exc).splitlines()[0][:300])
        problem = "the database is not reachable (the server's log says why)"
    body: dict[str, Any] = {"status": "ok" if problem is None else "unavailable"}
    dispatcher = runtime.dispatcher
    if dispatcher is not None:
        body["hopper_leader"] = dispatcher.leader.is_leader
        problem = problem or dispatcher.not_ready()
    body["status"] = "ok" if problem is None else "unavailable"
    if problem is not None:
        body["reason"] = problem
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


def _registry(request: Request) -> CollectorRegistry:
    state = request.app.state
    registry: CollectorRegistry | None = getattr(state, "ops_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        runtime = _runtime(request)
        per_account = runtime.settings.metrics_token is not None
        registry.register(DatabaseCollector(runtime.db, per_account=per_account))
        ProcessCollector(registry=registry)
        state.ops_registry = registry
    return registry


def _scrape_allowed(request: Request) -> bool:
    token = _runtime(request).settings.metrics_token
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        401: {
            "description": "CALLFLEET_METRICS_TOKEN is set and no valid bearer.",
            # The route's own responses are text; its refusal is the JSON error envelope.
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        }
    },
)
def metrics(request: Request) -> Response:
    if not _scrape_allowed(request):
        return JSONResponse(
            {
                "status": "error",
                "message": "/metrics needs Authorization: Bearer <CALLFLEET_METRICS_TOKEN>.",
                "errors": [],
            },
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )
    registries = [_registry(request)]
    dispatcher = _runtime(request).dispatcher
    if dispatcher is not None:
        registries.append(dispatcher.metrics.registry)
    return Response(render(*registries), media_type=CONTENT_TYPE)
