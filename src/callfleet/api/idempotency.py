"""`Idempotency-Key` on POSTs that create things.

The first request with a key reserves it (`in_flight`, committed at once so that a
concurrent duplicate sees it and gets 409). Its response is stored with the key in
the same transaction that creates the batch or call, so a crash leaves either
nothing (the reservation expires and the key can be used again) or the whole
result. A retry with the same body gets the stored response and creates nothing;
the same key with a different body is 422.

A key is kept for `CALLFLEET_IDEMPOTENCY_TTL_HOURS` (24): after that it is treated as
never used, and the dispatcher's reaper sweeps it away. A rejected request (4xx)
created nothing, so by default its answer is not stored: the corrected retry with the
same key goes through (`CALLFLEET_IDEMPOTENCY_REPLAY_REJECTED` stores and replays it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from callfleet.api.errors import ApiError
from callfleet.store import idempotency_keys as keys

__all__ = ["Replay", "body_hash", "complete", "release", "reserve"]

RESERVATION = timedelta(minutes=5)
DEFAULT_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: dict[str, Any]


def body_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def reserve(
    conn: Connection,
    account_id: str,
    key: str,
    method_path: str,
    digest: str,
    now: datetime,
    *,
    ttl: timedelta = DEFAULT_TTL,
) -> Replay | None:
    """Reserve `key`; None means go ahead, a Replay means answer with it. May raise 409/422.

    A key first used `ttl` or more ago has expired and is reserved afresh.
    """
    if len(key) > 255 or not key.strip():
        raise ApiError(400, "Idempotency-Key must be 1 to 255 characters.")
    row = keys.find(conn, account_id, key)
    if row is not None and row.created_at <= now - ttl:
        keys.forget(conn, account_id, key)
        row = None
    if row is None:
        if not keys.insert_in_flight(
            conn, account_id, key, method_path, digest, now, now + RESERVATION
        ):
            raise ApiError(
                409, "A request with this Idempotency-Key is still being processed; retry shortly."
            )
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
    keys.lock(conn, account_id, key, now + RESERVATION)
    return None


def complete(
    conn: Connection,
    account_id: str,
    key: str,
    status_code: int,
    body: dict[str, Any],
    *,
    replay_rejected: bool = False,
) -> None:
    """Store the answer under the key; a 4xx (nothing was created) only frees the key,
    unless `replay_rejected`."""
    if 400 <= status_code < 500 and not replay_rejected:
        keys.release(conn, account_id, key)
        return
    keys.complete(conn, account_id, key, status_code, body)


def release(conn: Connection, account_id: str, key: str) -> None:
    """Forget an in-flight reservation (the request failed before creating anything)."""
    keys.release(conn, account_id, key)
