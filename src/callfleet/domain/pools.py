"""Caller-ID pools and local presence: which of a pool's numbers should ring a callee.

A call whose `from` is `pool:NAME` goes out from the pool's number that is nearest
the callee: one with the callee's area code, else one in the callee's state or
province, else one in the callee's country, else any. Within a tier the least
recently used number comes first, so the pool's load spreads and no number rings
one area in a burst. Paused numbers are never offered. `rank_pool` gives the whole
order; the hopper takes the first one whose calls-per-second bucket has a token,
so a busy local number hands the call to the next nearest rather than holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .phones import area_of, country_of, state_of

__all__ = ["PoolNumber", "rank_pool"]


@dataclass(frozen=True)
class PoolNumber:
    """One number of a pool as the hopper sees it in an admission pass."""

    phone_number: str
    last_used_at: datetime | None
    paused: bool = False


def rank_pool(callee: str, members: Sequence[PoolNumber]) -> list[str]:
    """The pool's usable numbers for a call to `callee`, best first."""
    area, state, country = area_of(callee), state_of(callee), country_of(callee)

    def tier(number: str) -> int:
        if area is not None and area_of(number) == area:
            return 0
        if state is not None and state_of(number) == state:
            return 1
        if country is not None and country_of(number) == country:
            return 2
        return 3

    usable = [m for m in members if not m.paused]
    # Never used sorts first (an empty tuple before any timestamp); the number breaks ties.
    usable.sort(
        key=lambda m: (
            tier(m.phone_number),
            () if m.last_used_at is None else (m.last_used_at.timestamp(),),
            m.phone_number,
        )
    )
    return [m.phone_number for m in usable]
