"""Accounts and their API keys. A key is shown once and stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.store.ids import new_id, utcnow
from callfleet.store.tables import accounts, api_keys
from callfleet.webhooks.signing import new_secret

__all__ = ["Account", "account_by_key", "create_account", "create_key", "get_account"]

KEY_PREFIX = "cf_"


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    webhook_secret: str
    concurrency_cap: int | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_account(conn: Connection, name: str) -> Account:
    account = Account(new_id(), name, new_secret(), None)
    conn.execute(
        sa.insert(accounts).values(
            id=account.id,
            name=name,
            webhook_secret=account.webhook_secret,
            concurrency_cap=None,
            created_at=utcnow(),
        )
    )
    return account


def get_account(conn: Connection, account_id: str) -> Account | None:
    row = conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()
    if row is None:
        return None
    return Account(row.id, row.name, row.webhook_secret, row.concurrency_cap)


def create_key(conn: Connection, account_id: str, name: str) -> str:
    """Create an API key for the account and return it (the only time it is seen)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(api_keys).values(
            id=new_id(),
            account_id=account_id,
            name=name,
            prefix=key[:10],
            key_hash=_hash(key),
            created_at=utcnow(),
        )
    )
    return key


def account_by_key(conn: Connection, key: str) -> Account | None:
    row = conn.execute(
        sa.select(accounts)
        .join(api_keys, api_keys.c.account_id == accounts.c.id)
        .where(api_keys.c.key_hash == _hash(key), api_keys.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Account(row.id, row.name, row.webhook_secret, row.concurrency_cap)
