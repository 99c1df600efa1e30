"""Identifiers and the clock the store uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

__all__ = ["new_id", "utcnow"]


def new_id() -> str:
    """A random UUID string: call, batch, account and delivery ids."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)
