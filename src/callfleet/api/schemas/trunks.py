"""`/v1/trunks`: SIP trunks. The password is write-only: a trunk shows `has_password`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["AddTrunkRequest", "TrunkAdded", "TrunkList", "TrunkObject", "TrunkResponse"]


class AddTrunkRequest(BaseModel):
    """Unknown fields are ignored and listed in `warnings`."""

    name: str = Field(min_length=1, max_length=200, examples=["carrier-east"])
    host: str = Field(min_length=1, max_length=255, examples=["sip.example.net"])
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    username: str | None = Field(
        default=None, min_length=1, max_length=255, description="With `password`, or neither."
    )
    password: str | None = Field(
        default=None, min_length=1, max_length=255, description="Stored encrypted; never shown."
    )
    from_domain: str | None = Field(default=None, min_length=1, max_length=255)
    cps: float = Field(default=1, gt=0, le=1000, description="Calls per second.")
    default: bool = Field(default=False, description="Calls without a number's trunk use it.")


class TrunkObject(BaseModel):
    trunk_id: str
    name: str
    host: str
    port: int
    transport: str
    username: str | None
    has_password: bool
    from_domain: str | None
    cps: float
    default: bool
    created_at: str | None


class TrunkAdded(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    trunk: TrunkObject
    warnings: list[str]


class TrunkResponse(BaseModel):
    status: str = Field(examples=["success"])
    trunk: TrunkObject


class TrunkList(BaseModel):
    status: str = Field(examples=["success"])
    trunks: list[TrunkObject]
