"""A page of a list: where it starts, how many rows, which way `created_at` runs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_INDEX", "Page"]

MAX_INDEX = 10**12
"""The largest row offset a client may ask for (larger ones overflow 64-bit integers)."""


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    ascending: bool = False
