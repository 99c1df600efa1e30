"""Which trunk a call goes out through, and which calls-per-second bucket it spends.

A call leaves through the trunk its `from` number is bound to; without one, through
the account's default trunk (the one marked default, or its only trunk); without
any trunk, through the built-in carrier (the phone simulator). A rehearsal call
(`calls.rehearsal_of`) always goes to the built-in carrier. Pacing follows the
same choice: one bucket per trunk at the trunk's `cps`, or, for calls on the
built-in carrier, one bucket per caller ID at the number's `cps` or the default.
The snapshot also holds what the hopper needs to pick a pool's number: each
pool's members, which numbers are paused, and when each was last used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.domain.pools import PoolNumber
from callfleet.store.tables import numbers, trunks

__all__ = ["Routes", "TrunkRow", "load_routes", "trunk_for_call"]

BUILTIN = "builtin"


@dataclass(frozen=True)
class TrunkRow:
    id: str
    host: str
    port: int
    transport: str
    username: str | None
    password_enc: str | None
    from_domain: str | None
    cps: float


def _trunk(row: Any) -> TrunkRow:
    return TrunkRow(
        row.id,
        row.host,
        row.port,
        row.transport,
        row.username,
        row.password_enc,
        row.from_domain,
        row.cps,
    )


@dataclass
class Routes:
    """A snapshot of numbers and trunks, for one admission pass."""

    number_trunk: dict[tuple[str, str], str]
    number_cps: dict[tuple[str, str], float]
    trunk_cps: dict[str, float]
    default_trunk: dict[str, str]
    pools: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(account, pool name) -> its numbers."""
    paused: set[tuple[str, str]] = field(default_factory=set)
    last_used: dict[tuple[str, str], datetime | None] = field(default_factory=dict)
    health_from: dict[tuple[str, str], datetime | None] = field(default_factory=dict)

    def pool_members(self, account_id: str, pool: str) -> list[PoolNumber]:
        """The pool's numbers as `domain.pools.rank_pool` reads them, as of now."""
        return [
            PoolNumber(
                number,
                self.last_used.get((account_id, number)),
                (account_id, number) in self.paused,
            )
            for number in self.pools.get((account_id, pool), [])
        ]

    def pacing(
        self,
        account_id: str,
        from_number: str | None,
        default_cps: float,
        *,
        builtin: bool = False,
    ) -> tuple[str, float]:
        """The bucket key and rate for a call; `builtin`: the call goes to the built-in
        carrier whatever trunks the account has (a rehearsal call)."""
        trunk_id = None if builtin else self._trunk_of(account_id, from_number)
        if trunk_id is not None:
            return f"trunk:{trunk_id}", self.trunk_cps[trunk_id]
        caller = from_number or BUILTIN
        rate = self.number_cps.get((account_id, caller), default_cps)
        return f"caller:{caller}", rate

    def _trunk_of(self, account_id: str, from_number: str | None) -> str | None:
        trunk_id = None
        if from_number is not None:
            trunk_id = self.number_trunk.get((account_id, from_number))
        return trunk_id or self.default_trunk.get(account_id)


def _defaults(rows: list[Any]) -> dict[str, str]:
    by_account: dict[str, list[Any]] = {}
    for row in rows:
        by_account.setdefault(row.account_id, []).append(row)
    out: dict[str, str] = {}
    for account_id, found in by_account.items():
        marked = [r for r in found if r.is_default]
        if marked:
            out[account_id] = marked[0].id
        elif len(found) == 1:
            out[account_id] = found[0].id
    return out


def load_routes(conn: Connection) -> Routes:
    trunk_rows = conn.execute(
        sa.select(trunks.c.id, trunks.c.account_id, trunks.c.cps, trunks.c.is_default)
    ).all()
    number_rows = conn.execute(
        sa.select(
            numbers.c.account_id,
            numbers.c.phone_number,
            numbers.c.trunk_id,
            numbers.c.cps,
            numbers.c.pool,
            numbers.c.paused_at,
            numbers.c.last_used_at,
            numbers.c.health_from,
        )
    ).all()
    pools: dict[tuple[str, str], list[str]] = {}
    for r in number_rows:
        if r.pool:
            pools.setdefault((r.account_id, r.pool), []).append(r.phone_number)
    return Routes(
        number_trunk={
            (r.account_id, r.phone_number): r.trunk_id for r in number_rows if r.trunk_id
        },
        number_cps={(r.account_id, r.phone_number): r.cps for r in number_rows if r.cps},
        trunk_cps={r.id: r.cps for r in trunk_rows},
        default_trunk=_defaults(list(trunk_rows)),
        pools=pools,
        paused={(r.account_id, r.phone_number) for r in number_rows if r.paused_at is not None},
        last_used={(r.account_id, r.phone_number): r.last_used_at for r in number_rows},
        health_from={(r.account_id, r.phone_number): r.health_from for r in number_rows},
    )


_ACCOUNT_TRUNKS = (
    sa.select(trunks)
    .where(trunks.c.account_id == sa.bindparam("b_account"))
    .order_by(trunks.c.created_at)
)
_NUMBER_TRUNK = sa.select(numbers.c.trunk_id).where(
    numbers.c.account_id == sa.bindparam("b_account"),
    numbers.c.phone_number == sa.bindparam("b_number"),
)


def trunk_for_call(conn: Connection, account_id: str, from_number: str | None) -> TrunkRow | None:
    rows = conn.execute(_ACCOUNT_TRUNKS, {"b_account": account_id}).all()
    if not rows:
        return None
    chosen = None
    if from_number is not None:
        chosen = conn.execute(
            _NUMBER_TRUNK, {"b_account": account_id, "b_number": from_number}
        ).scalar()
    if chosen is None:
        chosen = _defaults(list(rows)).get(account_id)
    for row in rows:
        if row.id == chosen:
            return _trunk(row)
    return None
