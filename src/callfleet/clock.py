"""The one clock: every timestamp callfleet writes is `utcnow()`, timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Now, in UTC, with its timezone."""
    return datetime.now(UTC)
