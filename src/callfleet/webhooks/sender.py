"""The webhook sender: takes due deliveries from the outbox and sends them, signed.

A delivery is leased before it is sent so that two senders never send it at the
same moment; its `webhook-id` is the delivery id, so a receiver that sees it twice
(after a crash between sending and recording) can tell. Failures are retried on
the documented schedule (`delivery.RETRY_SCHEDULE`, a bit over a day in all); every
attempt is recorded and readable through the API. A receiver's `Retry-After` replaces
the schedule's delay, bounded by the schedule's longest step (scaled like it); a 410
Gone fails the delivery at once, the reason recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.store.accounts import WebhookSecrets
from callfleet.store.db import Database
from callfleet.store.tables import accounts, webhook_attempts, webhook_deliveries
from callfleet.webhooks.delivery import (
    RETRY_SCHEDULE,
    AttemptResult,
    deliver,
    new_client,
    next_delay,
)
from callfleet.webhooks.outbox import DeliveryState

__all__ = ["WebhookSender"]

log = structlog.get_logger(__name__)
LEASE = timedelta(seconds=120)


def _claim_due(conn: Connection, now: datetime, limit: int) -> list[Any]:
    rows = conn.execute(
        sa.select(
            webhook_deliveries,
            accounts.c.webhook_secret,
            accounts.c.previous_webhook_secret,
            accounts.c.previous_webhook_secret_expires_at,
        )
        .join(accounts, accounts.c.id == webhook_deliveries.c.account_id)
        .where(
            webhook_deliveries.c.state == DeliveryState.PENDING,
            webhook_deliveries.c.next_attempt_at <= now,
            sa.or_(
                webhook_deliveries.c.lease_until.is_(None),
                webhook_deliveries.c.lease_until < now,
            ),
        )
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(limit)
    ).all()
    claimed = []
    for row in rows:
        res = conn.execute(
            sa.update(webhook_deliveries)
            .where(
                webhook_deliveries.c.id == row.id,
                webhook_deliveries.c.state == DeliveryState.PENDING,
                sa.or_(
                    webhook_deliveries.c.lease_until.is_(None),
                    webhook_deliveries.c.lease_until < now,
                ),
            )
            .values(lease_until=now + LEASE)
        )
        if res.rowcount == 1:
            claimed.append(row)
    return claimed


def _signing_secrets(row: Any) -> list[str]:
    """The current secret, and the rotated-out one while it still signs."""
    secrets = WebhookSecrets(
        row.webhook_secret, row.previous_webhook_secret, row.previous_webhook_secret_expires_at
    )
    return secrets.signing(utcnow())


GONE_ERROR = "HTTP 410 Gone: the receiver asked for no more retries of this delivery"


def _retry_delay(attempt: int, result: AttemptResult, scale: float) -> float | None:
    """Seconds until the next attempt, or None: the delivery has failed for good."""
    if not result.retryable or result.gone:
        return None
    delay = next_delay(attempt, scale=scale)
    if delay is None or result.retry_after_s is None:
        return delay
    # The receiver's wish, but never beyond the schedule's longest wait.
    return min(result.retry_after_s, max(RETRY_SCHEDULE) * scale)


def _record(conn: Connection, row: Any, result: AttemptResult, now: datetime, scale: float) -> None:
    attempt = row.attempts + 1
    if result.gone:
        result = dataclasses.replace(result, error=GONE_ERROR)
    conn.execute(
        sa.insert(webhook_attempts).values(
            delivery_id=row.id,
            attempt=attempt,
            at=now,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )
    )
    values: dict[str, Any] = {
        "attempts": attempt,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "lease_until": None,
    }
    if result.ok:
        values.update(state=DeliveryState.DELIVERED, delivered_at=now, next_attempt_at=None)
    else:
        delay = _retry_delay(attempt, result, scale)
        if delay is None:
            values.update(state=DeliveryState.FAILED, next_attempt_at=None)
        else:
            values.update(next_attempt_at=now + timedelta(seconds=delay))
    conn.execute(
        sa.update(webhook_deliveries).where(webhook_deliveries.c.id == row.id).values(**values)
    )


class WebhookSender:
    """Polls the outbox; `wake()` makes it look at once."""

    def __init__(self, db: Database, settings: Settings, *, concurrency: int = 20) -> None:
        self.db = db
        self.settings = settings
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._client = new_client(timeout_s=self.settings.webhook_timeout_s)
        self._task = asyncio.create_task(self._loop(), name="webhook-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def send_due(self) -> int:
        """Send every delivery that is due now; returns how many were attempted."""
        assert self._client is not None, "start() the sender first"
        client = self._client

        def claim() -> list[Any]:
            with self.db.write() as conn:
                return _claim_due(conn, utcnow(), self.concurrency)

        rows = await asyncio.to_thread(claim)
        if not rows:
            return 0

        async def one(row: Any) -> None:
            body = json.dumps(row.payload, separators=(",", ":")).encode()
            try:
                result = await deliver(
                    client,
                    row.url,
                    _signing_secrets(row),
                    row.id,
                    body,
                    allow_private=self.settings.webhook_allow_private,
                    timeout_s=self.settings.webhook_timeout_s,
                )
            except Exception as exc:  # a broken secret or URL must not stop other deliveries
                result = AttemptResult(False, None, f"delivery error: {exc}", 0, False)

            def record() -> None:
                with self.db.write() as conn:
                    _record(conn, row, result, utcnow(), self.settings.webhook_retry_scale)

            await asyncio.to_thread(record)
            if not result.ok:
                log.info(
                    "webhook attempt failed",
                    delivery=row.id,
                    url=row.url.split("?", 1)[0],  # a query string may hold a token
                    status=result.status_code,
                    error=result.error,
                )

        await asyncio.gather(*(one(r) for r in rows))
        return len(rows)

    async def _loop(self) -> None:
        while True:
            try:
                sent = await self.send_due()
            except Exception:
                log.exception("webhook pass failed; retrying")
                sent = 0
            if sent:
                continue
            self._wake.clear()
            # asyncio.wait, unlike wait_for on 3.11, never swallows our cancellation.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=0.5)
            finally:
                waiter.cancel()
