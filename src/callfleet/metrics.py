"""Prometheus metrics: what the dispatcher counts, and what the database says.

Two kinds of metric, each in its own registry so several apps in one process
(tests) never collide:

- counters kept by a process as things happen: `DispatchMetrics` (calls admitted
  by this process's hopper, admission pass times, whether this process leads) and
  `WorkerMetrics` (calls run by a `callfleet worker`, live calls on it);
- what this process's SIP and RTP layers dropped (`DropsCollector`, in both
  registries above: calls run where the dispatcher or the worker is);
- gauges read from the database at scrape time by `DatabaseCollector`, the same
  on every API replica: calls by state and status, live calls per account and per
  worker, hopper lag (how long the oldest due queued call has waited), webhook
  backlog (deliveries still pending), recordings still waiting on a machine's disk
  for the storage (and how many of them failed an upload attempt), and how long
  the oldest of them has waited.

`render(...)` concatenates registries into one exposition for `/metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection

from callfleet.domain.states import DIALLED_STATES, CallState
from callfleet.store.db import Database
from callfleet.store.tables import accounts, calls, recording_uploads, webhook_deliveries
from callfleet.telephony.rtp.drops import RTP_DROPS
from callfleet.telephony.sip.drops import SIP_DROPS
from callfleet.webhooks.outbox import DeliveryState

__all__ = [
    "CONTENT_TYPE",
    "DatabaseCollector",
    "DispatchMetrics",
    "DropsCollector",
    "WorkerMetrics",
    "render",
]

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DispatchMetrics:
    """Kept by a `Dispatcher`: admissions, pass times, leadership, reaper work."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admitted = Counter(
            "callfleet_calls_admitted",
            "Calls admitted by this process's hopper; rate() is admitted per second.",
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "callfleet_hopper_pass_seconds",
            "Duration of one admission pass (one transaction).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.leader = Gauge(
            "callfleet_hopper_leader",
            "1 while this process holds the hopper's leader lock.",
            registry=self.registry,
        )
        self.requeued = Counter(
            "callfleet_reaper_requeued",
            "Admitted calls or stalled jobs the reaper handed to the engine again.",
            registry=self.registry,
        )
        self.registry.register(DropsCollector())


class DropsCollector(Collector):
    """The telephony layer's process-wide drop counters, by reason."""

    def describe(self) -> Iterable[Metric]:
        return []  # collected live; the reasons are known only once something is dropped

    def collect(self) -> Iterable[Metric]:
        rtp = CounterMetricFamily(
            "callfleet_rtp_packets_dropped",
            "RTP/RTCP packets dropped (not from the call's media peer, malformed, ...).",
            labels=["reason"],
        )
        for reason, n in sorted(RTP_DROPS.snapshot().items()):
            rtp.add_metric([reason], float(n))
        sip = CounterMetricFamily(
            "callfleet_sip_requests_dropped",
            "SIP requests and connections refused or dropped (stranger, table full, ...).",
            labels=["reason"],
        )
        for reason, n in sorted(SIP_DROPS.snapshot().items()):
            sip.add_metric([reason], float(n))
        return [rtp, sip]


class WorkerMetrics:
    """Kept by a `callfleet worker`: calls run, and calls live right now."""

    def __init__(self, live: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "callfleet_worker_jobs",
            "Call jobs this worker ran (a duplicate delivery is a job without a dial).",
            registry=self.registry,
        )
        self.aborted = Counter(
            "callfleet_worker_jobs_aborted",
            "Call jobs aborted (a stop request, or the shutdown deadline).",
            registry=self.registry,
        )
        live_gauge = Gauge(
            "callfleet_worker_live_calls_here",
            "Calls live on this worker process now.",
            registry=self.registry,
        )
        live_gauge.set_function(lambda: float(live()))
        ProcessCollector(registry=self.registry)  # RSS and CPU of the worker process
        self.registry.register(DropsCollector())


class DatabaseCollector(Collector):
    """Gauges computed from the database on each scrape (cheap, index-backed queries).

    `per_account=False` (no metrics token configured, so anyone may scrape) gives
    `callfleet_live_calls` as one total without the `account` label: account ids are
    not for every scraper to list."""

    def __init__(self, db: Database, *, per_account: bool = True) -> None:
        self.db = db
        self.per_account = per_account

    def describe(self) -> Iterable[Metric]:
        return []  # collected live; nothing to describe up front

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "callfleet_database_up", "1 if the database answered this scrape's queries."
        )
        try:
            families = self._collect()
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("metrics: database query failed", error=str(exc)[:200])
            up.add_metric([], 0.0)
            return [up]
        up.add_metric([], 1.0)
        return [up, *families]

    def _collect(self) -> list[Metric]:
        now = datetime.now(UTC)
        by_status = GaugeMetricFamily(
            "callfleet_calls",
            "Calls by dispatch state and API status (status empty until a first outcome).",
            labels=["state", "status"],
        )
        per_account = GaugeMetricFamily(
            "callfleet_live_calls",
            "Calls dialling or live, per account (a total without a metrics token).",
            labels=["account"] if self.per_account else [],
        )
        per_worker = GaugeMetricFamily(
            "callfleet_worker_live_calls",
            "Calls dialling or live, per worker (the lease owner).",
            labels=["worker"],
        )
        lag = GaugeMetricFamily(
            "callfleet_hopper_lag_seconds",
            "Seconds the oldest due queued call has waited for admission (0: none waiting).",
        )
        backlog = GaugeMetricFamily(
            "callfleet_webhook_backlog", "Webhook deliveries pending (not yet delivered)."
        )
        with self.db.read() as conn:
            uploads = _upload_families(conn, now)
            for state, status, n in conn.execute(
                sa.select(calls.c.state, calls.c.status, sa.func.count()).group_by(
                    calls.c.state, calls.c.status
                )
            ):
                by_status.add_metric([str(state), str(status or "")], float(n))
            live = conn.execute(
                sa.select(calls.c.account_id, calls.c.lease_owner, sa.func.count())
                .where(calls.c.state.in_(DIALLED_STATES))
                .group_by(calls.c.account_id, calls.c.lease_owner)
            ).all()
            # Per account through the (account_id, state, not_before) index: the first
            # due entry of each account is its oldest.
            oldest_due = (
                sa.select(sa.func.min(calls.c.not_before))
                .where(
                    calls.c.account_id == accounts.c.id,
                    calls.c.state == CallState.QUEUED,
                    calls.c.not_before <= now,
                )
                .scalar_subquery()
            )
            oldest = [
                value
                for (value,) in conn.execute(sa.select(oldest_due).select_from(accounts))
                if value is not None
            ]
            pending = conn.execute(
                sa.select(sa.func.count()).where(
                    webhook_deliveries.c.state == DeliveryState.PENDING
                )
            ).scalar()
        accounts_live: dict[str, int] = {}
        workers_live: dict[str, int] = {}
        for account_id, owner, n in live:
            accounts_live[account_id] = accounts_live.get(account_id, 0) + int(n)
            worker = str(owner or "")
            workers_live[worker] = workers_live.get(worker, 0) + int(n)
        if self.per_account:
            for account_id, n in sorted(accounts_live.items()):
                per_account.add_metric([account_id], float(n))
        else:
            per_account.add_metric([], float(sum(accounts_live.values())))
        for worker, n in sorted(workers_live.items()):
            per_worker.add_metric([worker], float(n))
        waited = [(now - _aware(v)).total_seconds() for v in oldest]
        lag.add_metric([], max([0.0, *waited]))
        backlog.add_metric([], float(pending or 0))
        return [by_status, per_account, per_worker, lag, backlog, *uploads]


def _upload_families(conn: Connection, now: datetime) -> list[Metric]:
    """The upload outbox: recordings on a machine's disk waiting for the storage."""
    uploads = GaugeMetricFamily(
        "callfleet_recording_uploads",
        "Recordings on a machine's disk waiting for the storage: `waiting` (not tried "
        "or first try due) or `failing` (an upload attempt failed; retried with backoff).",
        labels=["state"],
    )
    upload_age = GaugeMetricFamily(
        "callfleet_recording_upload_oldest_seconds",
        "Seconds the oldest recording still waiting for its upload has waited (0: none).",
    )
    waiting, failing, first = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(recording_uploads.c.attempts > 0),
            sa.func.min(recording_uploads.c.created_at),
        )
    ).one()
    uploads.add_metric(["waiting"], float((waiting or 0) - (failing or 0)))
    uploads.add_metric(["failing"], float(failing or 0))
    upload_age.add_metric([], (now - _aware(first)).total_seconds() if first else 0.0)
    return [uploads, upload_age]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def render(*registries: CollectorRegistry) -> bytes:
    """One text exposition of several registries (their metric names are distinct)."""
    return b"".join(generate_latest(registry) for registry in registries)
