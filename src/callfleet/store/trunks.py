"""An account's SIP trunks. Every function takes the account's id first.

Passwords arrive here already encrypted (`store.secrets.SecretBox`): this module
never sees one in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.store.tables import trunks

__all__ = ["NewTrunk", "add_trunk", "delete_trunk", "get_trunk", "list_trunks"]


@dataclass(frozen=True)
class NewTrunk:
    """A trunk row to insert, besides its account and the time."""

    id: str
    name: str
    host: str
    port: int
    transport: str
    username: str | None
    password_enc: str | None
    from_domain: str | None
    cps: float
    is_default: bool


def add_trunk(conn: Connection, account_id: str, trunk: NewTrunk, now: datetime) -> Row[Any]:
    """Insert the trunk (a new default trunk takes over from the old one); return its row.

    Raises `IntegrityError` if the account already has a trunk by that name.
    """
    if trunk.is_default:
        conn.execute(
            sa.update(trunks).where(trunks.c.account_id == account_id).values(is_default=False)
        )
    conn.execute(
        sa.insert(trunks).values(
            id=trunk.id,
            account_id=account_id,
            name=trunk.name,
            host=trunk.host,
            port=trunk.port,
            transport=trunk.transport,
            username=trunk.username,
            password_enc=trunk.password_enc,
            from_domain=trunk.from_domain,
            cps=trunk.cps,
            is_default=trunk.is_default,
            created_at=now,
        )
    )
    return conn.execute(sa.select(trunks).where(trunks.c.id == trunk.id)).one()


def get_trunk(conn: Connection, account_id: str, trunk_id: str) -> Row[Any] | None:
    return conn.execute(
        sa.select(trunks).where(trunks.c.id == trunk_id, trunks.c.account_id == account_id)
    ).first()


def list_trunks(conn: Connection, account_id: str) -> list[Row[Any]]:
    """The account's trunks, oldest first."""
    return list(
        conn.execute(
            sa.select(trunks).where(trunks.c.account_id == account_id).order_by(trunks.c.created_at)
        ).all()
    )


def delete_trunk(conn: Connection, account_id: str, trunk_id: str) -> bool:
    """Delete the trunk; False if the account has no such trunk."""
    res = conn.execute(
        sa.delete(trunks).where(trunks.c.id == trunk_id, trunks.c.account_id == account_id)
    )
    return res.rowcount != 0
