"""Operations endpoints: `/healthz`, `/readyz`, `/metrics`. No API key needed.

- `/healthz`: the process is alive and serving (no database involved), for a
  liveness probe.
- `/readyz`: the database answers and its schema is at the newest migration (and,
  with the procrastinate engine, procrastinate's schema is present); 503 with the
  reason otherwise, for a readiness probe or a load balancer.
- `/metrics`: Prometheus text exposition: the database gauges (calls by status,
  live calls per account and per worker, hopper lag, webhook backlog), this
  process's dispatcher counters (admitted calls, pass times, leadership) and the
  process collector.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, ProcessCollector

from callfleet.api.runtime import Runtime
from callfleet.metrics import CONTENT_TYPE, DatabaseCollector, render
from callfleet.store.db import Database
from callfleet.store.migrate import alembic_config

__all__ = ["migration_problem", "router"]

router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 3.0


def _heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def migration_problem(db: Database, *, procrastinate: bool = False) -> str | None:
    """None if the schema is current; otherwise what is wrong, in words."""
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
        if procrastinate:
            present = conn.execute(
                sa.text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            ).scalar()
            if not present:
                return "procrastinate's schema is missing: run `callfleet migrate`"
    heads = _heads()
    if current != heads:
        have = ", ".join(sorted(current)) or "none"
        want = ", ".join(sorted(heads))
        return f"the schema is at {have}, not at {want}: run `callfleet migrate`"
    return None


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/healthz", summary="Liveness: the process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable, schema current")
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
        problem = f"the database is not reachable: {str(exc).splitlines()[0][:200]}"
    body: dict[str, Any] = {"status": "ok" if problem is None else "unavailable"}
    dispatcher = runtime.dispatcher
    if dispatcher is not None:
        body["hopper_leader"] = dispatcher.leader.is_leader
    if problem is not None:
        body["reason"] = problem
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


def _registry(request: Request) -> CollectorRegistry:
    state = request.app.state
    registry: CollectorRegistry | None = getattr(state, "ops_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DatabaseCollector(_runtime(request).db))
        ProcessCollector(registry=registry)
        state.ops_registry = registry
    return registry


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    registries = [_registry(request)]
    dispatcher = _runtime(request).dispatcher
    if dispatcher is not None:
        registries.append(dispatcher.metrics.registry)
    return Response(render(*registries), media_type=CONTENT_TYPE)
