"""`/v1/webhooks`: the signing secret and the deliveries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "MAX_PREVIOUS_SECRET_HOURS",
    "DeliveryDetails",
    "DeliveryList",
    "DeliveryObject",
    "RotateSecretRequest",
    "WebhookSecret",
]

MAX_PREVIOUS_SECRET_HOURS = 168
"""The longest a rotated-out webhook secret may keep signing: a week."""


class RotateSecretRequest(BaseModel):
    previous_secret_hours: float | None = Field(
        default=None,
        ge=0,
        le=MAX_PREVIOUS_SECRET_HOURS,
        description="How many hours the previous secret keeps signing alongside the new "
        f"one, 0 to {MAX_PREVIOUS_SECRET_HOURS}; 0 stops it at once (a leaked secret). "
        "Default: the server's CALLFLEET_WEBHOOK_SECRET_OVERLAP_HOURS (24). Send `{}` for "
        "the default.",
    )


class WebhookSecret(BaseModel):
    status: str = Field(examples=["success"])
    secret: str
    scheme: str
    previous_secret_expires_at: str | None = Field(
        description="After a rotation, deliveries are also signed with the previous secret "
        "(a second signature in `webhook-signature`) until this time; null when only "
        "`secret` signs."
    )


class DeliveryObject(BaseModel):
    id: str
    event: str
    url: str
    call_id: str | None
    batch_id: str | None
    state: str = Field(description="`pending`, `delivered` or `failed`.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str | None
    delivered_at: str | None


class DeliveryAttempt(BaseModel):
    attempt: int
    at: str | None
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryWithAttempts(DeliveryObject):
    payload: Any
    attempt_log: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    status: str = Field(examples=["success"])
    deliveries: list[DeliveryObject]


class DeliveryDetails(BaseModel):
    status: str = Field(examples=["success"])
    delivery: DeliveryWithAttempts
