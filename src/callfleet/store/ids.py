"""Identifiers the store gives its rows."""

from __future__ import annotations

import uuid

__all__ = ["new_id"]


def new_id() -> str:
    """A random UUID string: call, batch, account and delivery ids."""
    return str(uuid.uuid4())
