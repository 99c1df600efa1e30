"""`/healthz` and `/readyz`."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Health", "Readiness"]


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description='"ok" or "unavailable".')
    hopper_leader: bool | None = Field(
        default=None, description="Whether this process leads the hopper (with a dispatcher)."
    )
    reason: str | None = Field(default=None, description="Why it is unavailable.")
