"""`Idempotency-Key` on POSTs that create things.

The first request with a key reserves it (`in_flight`, committed at once so that a
concurrent duplicate sees it and gets 409). Its response is stored with the key in
the same transaction that creates the batch or call, so a crash leaves either
nothing (the reservation expires and the key can be used again) or the whole
result. A retry with the same body gets the stored response and creates nothing;
the same key with a different body is 422.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from callfleet.api.errors import ApiError
from callfleet.store.tables import idempotency_keys

__all__ = ["Replay", "body_hash", "complete", "release", "reserve"]

RESERVATION = timedelta(minutes=5)


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: dict[str, Any]


def body_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def reserve(
    conn: Connection, account_id: str, key: str, method_path: str, digest: str, now: datetime
) -> Replay | None:
    """Reserve `key`; None means go ahead, a Replay means answer with it. May raise 409/422."""
    if len(key) > 255 or not key.strip():
        raise ApiError(400, "Idempotency-Key must be 1 to 255 characters.")
    row = conn.execute(
        sa.select(idempotency_keys).where(
            idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
        )
    ).first()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.insert(idempotency_keys).values(
                        account_id=account_id,
                        key=key,
                        method_path=method_path,
                        request_hash=digest,
                        state="in_flight",
                        created_at=now,
                        locked_until=now + RESERVATION,
                    )
                )
        except IntegrityError:
            raise ApiError(
                409, "A request with this Idempotency-Key is still being processed; retry shortly."
            ) from None
        return None
    if row.request_hash != digest or row.method_path != method_path:
        raise ApiError(
            422,
            "This Idempotency-Key was used with a different request; use a new key for a "
            "new request.",
        )
    if row.state == "done":
        return Replay(row.status_code, dict(row.response))
    if row.locked_until is not None and row.locked_until > now:
        raise ApiError(
            409, "A request with this Idempotency-Key is still being processed; retry shortly."
        )
    # The first request died before finishing: it wrote nothing, so take the key over.
    conn.execute(
        sa.update(idempotency_keys)
        .where(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)
        .values(locked_until=now + RESERVATION)
    )
    return None


def complete(
    conn: Connection, account_id: str, key: str, status_code: int, body: dict[str, Any]
) -> None:
    conn.execute(
        sa.update(idempotency_keys)
        .where(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)
        .values(state="done", status_code=status_code, response=body, locked_until=None)
    )


def release(conn: Connection, account_id: str, key: str) -> None:
    """Forget an in-flight reservation (the request failed before creating anything)."""
    conn.execute(
        sa.delete(idempotency_keys).where(
            idempotency_keys.c.account_id == account_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.state == "in_flight",
        )
    )
