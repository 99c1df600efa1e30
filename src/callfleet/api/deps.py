"""Route dependencies: the runtime, the database, and the calling account.

Tenant scoping starts here: `AccountDep` resolves the API key to exactly one
account (and counts the request against the key's rate limit), and every store
query a route makes takes that account's id. `owned` turns "not this account's
row" into the one 404 every route answers with, and `PageDep` is the
`limit`/`from`/`to`/`ascending` of every list.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Header, Query, Request

from callfleet.api.errors import ApiError
from callfleet.api.ratelimit import KeyRateLimiter
from callfleet.api.runtime import Runtime
from callfleet.clock import utcnow
from callfleet.storage import Storage, open_storage
from callfleet.store.accounts import Account, lookup_key, touch_key
from callfleet.store.paging import MAX_INDEX, Page

__all__ = ["MAX_INDEX", "AccountDep", "PageDep", "RuntimeDep", "StorageDep", "owned"]

T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_account(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Account:
    if not authorization or not authorization.strip():
        raise ApiError(
            401,
            "Missing API key: send it in the `authorization` header "
            "(create one with `callfleet keys create --name NAME`).",
        )
    key = authorization.strip()
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    # Looked up on every request, never cached, so a revocation holds on every replica at once.
    now = utcnow()
    with runtime.db.read() as conn:
        found = lookup_key(conn, key, now)
    if found is None:
        raise ApiError(401, "Unknown or revoked API key; check the `authorization` header.")
    _rate_limiter(request, runtime).check(key)
    request.state.key_id = found.key_id  # who asked, for audits (POST /v1/erasure)
    if found.touch_due:  # at most once a minute per key, so authentication stays a read
        with runtime.db.write() as conn:
            touch_key(conn, found.key_id, now)
    return found.account


def _rate_limiter(request: Request, runtime: Runtime) -> KeyRateLimiter:
    """The app's one per-key limiter (`api/ratelimit.py`), made on first use."""
    limiter: KeyRateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        limiter = request.app.state.rate_limiter = KeyRateLimiter(runtime.settings.api_rate_limit)
    return limiter


AccountDep = Annotated[Account, Depends(get_account)]


def get_storage(request: Request, runtime: RuntimeDep) -> Storage:
    """The app's one storage (`CALLFLEET_STORAGE_URL`), opened on first use."""
    storage: Storage | None = getattr(request.app.state, "storage", None)
    if storage is None:
        storage = request.app.state.storage = open_storage(runtime.settings.storage_location)
    return storage


StorageDep = Annotated[Storage, Depends(get_storage)]


def owned(row: T | None, noun: str, row_id: str, listing: str | None = None) -> T:
    """`row`, or a 404 saying the account has no `noun` by that id (and where to list them)."""
    if row is None:
        hint = f"; list them with GET {listing}." if listing else "."
        raise ApiError(404, f"No {noun} {row_id!r} in this account{hint}")
    return row


def get_page(
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    from_: Annotated[int | None, Query(alias="from", ge=0, le=MAX_INDEX)] = None,
    to: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None,
    ascending: bool = False,
) -> Page:
    """Rows `from` (inclusive) to `to` (exclusive), at most `limit` of them."""
    start = from_ or 0
    count = limit if to is None else max(0, min(limit, to - start))
    return Page(offset=start, limit=count, ascending=ascending)


PageDep = Annotated[Page, Depends(get_page)]
