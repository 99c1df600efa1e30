"""Route dependencies: the runtime, the database, and the calling account.

Tenant scoping starts here: `AccountDep` resolves the API key to exactly one
account, and every store query a route makes takes that account's id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from callfleet.api.errors import ApiError
from callfleet.api.runtime import Runtime
from callfleet.store.accounts import Account, account_by_key

__all__ = ["AccountDep", "RuntimeDep"]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_account(
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
    with runtime.db.read() as conn:
        account = account_by_key(conn, key)
    if account is None:
        raise ApiError(401, "Unknown or revoked API key; check the `authorization` header.")
    return account


AccountDep = Annotated[Account, Depends(get_account)]
