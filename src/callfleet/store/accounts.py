"""Accounts and their API keys. A key is shown once and stored only as a SHA-256 hash.

A key is looked up in the database on every request (no process keeps a copy), so a
revoked key is refused at once by every API replica. When a key was last used is
written at most once every `LAST_USED_EVERY`, so authentication stays a read.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.clock import utcnow
from callfleet.domain.webhook_secret import new_secret
from callfleet.store.ids import new_id
from callfleet.store.tables import accounts, api_keys

__all__ = [
    "LAST_USED_EVERY",
    "Account",
    "ApiKey",
    "KeyLookup",
    "WebhookSecrets",
    "account_by_key",
    "create_account",
    "create_key",
    "find_keys",
    "get_account",
    "list_keys",
    "lookup_key",
    "revoke_key",
    "rotate_webhook_secret",
    "touch_key",
    "webhook_secrets",
]

KEY_PREFIX = "cf_"
LAST_USED_EVERY = timedelta(minutes=1)


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


@dataclass(frozen=True)
class KeyLookup:
    """A live key's account, and whether its `last_used_at` is due to be written."""

    account: Account
    key_id: str
    touch_due: bool


def lookup_key(conn: Connection, key: str, now: datetime) -> KeyLookup | None:
    """The account of `key` if the key exists and is not revoked."""
    row = conn.execute(
        sa.select(accounts, api_keys.c.id.label("key_id"), api_keys.c.last_used_at)
        .join(api_keys, api_keys.c.account_id == accounts.c.id)
        .where(api_keys.c.key_hash == _hash(key), api_keys.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    account = Account(row.id, row.name, row.webhook_secret, row.concurrency_cap)
    due = row.last_used_at is None or row.last_used_at <= now - LAST_USED_EVERY
    return KeyLookup(account, row.key_id, due)


def account_by_key(conn: Connection, key: str) -> Account | None:
    found = lookup_key(conn, key, utcnow())
    return None if found is None else found.account


def touch_key(conn: Connection, key_id: str, now: datetime) -> None:
    """Record that the key was used; a no-op if another replica did so within the minute."""
    conn.execute(
        sa.update(api_keys)
        .where(
            api_keys.c.id == key_id,
            sa.or_(
                api_keys.c.last_used_at.is_(None),
                api_keys.c.last_used_at <= now - LAST_USED_EVERY,
            ),
        )
        .values(last_used_at=now)
    )


@dataclass(frozen=True)
class ApiKey:
    """What may be shown of a key: never the key itself, nor its hash."""

    id: str
    account_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.account_id,
        row.name,
        row.prefix,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
    )


def list_keys(conn: Connection, account_id: str | None = None) -> list[ApiKey]:
    """Every key (of one account, if given), oldest first."""
    query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    return [_api_key(row) for row in conn.execute(query)]


def find_keys(conn: Connection, id_or_prefix: str) -> list[ApiKey]:
    """The key with this id, or else every key whose prefix starts with the text."""
    by_id = conn.execute(sa.select(api_keys).where(api_keys.c.id == id_or_prefix)).first()
    if by_id is not None:
        return [_api_key(by_id)]
    if not id_or_prefix:
        return []
    rows = conn.execute(
        sa.select(api_keys)
        .where(api_keys.c.prefix.startswith(id_or_prefix, autoescape=True))
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [_api_key(row) for row in rows]


def revoke_key(conn: Connection, key_id: str, now: datetime) -> bool:
    """Revoke the key; False if it was revoked already."""
    done = conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return done.rowcount == 1


@dataclass(frozen=True)
class WebhookSecrets:
    """The account's webhook secret, and the one it replaced while that still signs."""

    current: str
    previous: str | None
    previous_expires_at: datetime | None

    def live(self, now: datetime) -> WebhookSecrets:
        """These secrets, without the previous one once it has expired."""
        if self.previous_expires_at is not None and self.previous_expires_at > now:
            return self
        return WebhookSecrets(self.current, None, None)

    def signing(self, now: datetime) -> list[str]:
        """The secrets a delivery is signed with now, the current one first."""
        live = self.live(now)
        return [live.current] if live.previous is None else [live.current, live.previous]


def webhook_secrets(conn: Connection, account_id: str) -> WebhookSecrets:
    row = conn.execute(
        sa.select(
            accounts.c.webhook_secret,
            accounts.c.previous_webhook_secret,
            accounts.c.previous_webhook_secret_expires_at,
        ).where(accounts.c.id == account_id)
    ).one()
    return WebhookSecrets(
        row.webhook_secret, row.previous_webhook_secret, row.previous_webhook_secret_expires_at
    )


def rotate_webhook_secret(
    conn: Connection, account_id: str, now: datetime, overlap: timedelta
) -> WebhookSecrets:
    """Give the account a new secret; the current one keeps signing for `overlap` (if any).

    A secret that was already the previous one is dropped: only two ever sign.
    """
    # One UPDATE that moves the current secret into `previous` (SET reads the row as it
    # was), so two rotations at once chain up and no returned secret is silently lost.
    keep = overlap > timedelta(0)
    conn.execute(
        sa.update(accounts)
        .where(accounts.c.id == account_id)
        .values(
            webhook_secret=new_secret(),
            previous_webhook_secret=accounts.c.webhook_secret if keep else None,
            previous_webhook_secret_expires_at=now + overlap if keep else None,
        )
    )
    rotated = webhook_secrets(conn, account_id)
    return rotated
