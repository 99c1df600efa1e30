"""An account's do-not-call list. Every function takes the account's id first.

Numbers are stored normalized (E.164); the caller normalizes before asking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.store.tables import dnc

__all__ = [
    "OPT_OUT_SOURCES",
    "add_numbers",
    "add_opt_out",
    "dnc_hits",
    "get_entry",
    "list_entries",
    "remove_number",
]

OPT_OUT_SOURCES = ("call", "disposition")
"""How an opt-out reached the list: the callee asked on the call (words, keypad, the
LLM's `opt_out` tool), or the call's post-call disposition was DO_NOT_CONTACT."""


def get_entry(conn: Connection, account_id: str, number: str) -> Row[Any] | None:
    return conn.execute(
        sa.select(dnc).where(dnc.c.account_id == account_id, dnc.c.phone_number == number)
    ).first()


def add_numbers(
    conn: Connection,
    account_id: str,
    numbers: Iterable[str],
    reason: str | None,
    source: str,
    now: datetime,
) -> int:
    """Add each number not yet on the list; returns how many were added."""
    added = 0
    for number in numbers:
        if get_entry(conn, account_id, number) is None:
            conn.execute(
                sa.insert(dnc).values(
                    account_id=account_id,
                    phone_number=number,
                    reason=reason,
                    source=source,
                    created_at=now,
                )
            )
            added += 1
    return added


def add_opt_out(
    conn: Connection,
    account_id: str,
    number: str,
    *,
    call_id: str,
    reason: str,
    source: str,
    now: datetime,
) -> bool:
    """Put `number` on the list because the callee opted out on `call_id`; False if it
    was already there (the earlier entry, and its reason, stay)."""
    assert source in OPT_OUT_SOURCES, source
    if get_entry(conn, account_id, number) is not None:
        return False
    conn.execute(
        sa.insert(dnc).values(
            account_id=account_id,
            phone_number=number,
            reason=reason,
            source=source,
            created_at=now,
            call_id=call_id,
        )
    )
    return True


def list_entries(conn: Connection, account_id: str, offset: int, limit: int) -> list[Row[Any]]:
    """A page of the list, oldest entry first."""
    return list(
        conn.execute(
            sa.select(dnc)
            .where(dnc.c.account_id == account_id)
            .order_by(dnc.c.created_at, dnc.c.phone_number)
            .offset(offset)
            .limit(limit)
        ).all()
    )


def remove_number(conn: Connection, account_id: str, number: str) -> bool:
    """Take the number off the list; False if it was not on it."""
    res = conn.execute(
        sa.delete(dnc).where(dnc.c.account_id == account_id, dnc.c.phone_number == number)
    )
    return res.rowcount != 0


def dnc_hits(conn: Connection, account_id: str, candidates: Sequence[str]) -> set[str]:
    """Which of `candidates` (E.164) are on the account's list, asked 500 at a time."""
    hits: set[str] = set()
    uniq = sorted(set(candidates))
    for start in range(0, len(uniq), 500):
        chunk = uniq[start : start + 500]
        rows = conn.execute(
            sa.select(dnc.c.phone_number).where(
                dnc.c.account_id == account_id, dnc.c.phone_number.in_(chunk)
            )
        )
        hits.update(r[0] for r in rows)
    return hits
