"""`/v1/numbers`: the account's caller IDs."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = [
    "AddNumberRequest",
    "NumberAdded",
    "NumberDetails",
    "NumberHealth",
    "NumberList",
    "NumberObject",
]


class AddNumberRequest(BaseModel):
    phone_number: str | int = Field(
        description="The caller ID (stored in E.164).", examples=["+12125550100"]
    )
    label: str | None = Field(default=None, max_length=200)
    cps: float | None = Field(
        default=None, gt=0, le=1000, description="Calls per second from this number."
    )
    trunk_id: str | None = Field(
        default=None, description="The trunk (GET /v1/trunks) this number calls through."
    )
    pool: str | None = Field(
        default=None,
        description='A pool name (1-15 letters, digits, "-" or "_"): a call whose `from` is '
        '"pool:NAME" goes from the pool\'s number nearest the callee.',
        examples=["sales"],
    )
    webhook: str | None = Field(
        default=None, description="Where this number's `number.paused` event is sent."
    )


class NumberHealth(BaseModel):
    window_days: int = Field(examples=[7])
    attempts: int
    answer_rate: float | None
    median_answered_length_s: float | None
    short_call_rate: float | None = Field(description="Answered calls shorter than 10 s.")
    decline_rate: float | None
    state: str = Field(examples=["healthy"], description="healthy | watch | paused")


class NumberObject(BaseModel):
    id: str
    phone_number: str
    label: str | None
    cps: float | None
    trunk_id: str | None
    pool: str | None
    webhook: str | None
    paused_at: str | None
    paused_reason: str | None
    last_used_at: str | None
    health: NumberHealth
    created_at: str


class NumberAdded(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    number: NumberObject


class NumberDetails(BaseModel):
    status: str = Field(examples=["success"])
    number: NumberObject


class NumberList(BaseModel):
    status: str = Field(examples=["success"])
    numbers: list[NumberObject]
