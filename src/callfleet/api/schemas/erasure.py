"""`POST /v1/erasure`: erase what the account holds about one phone number."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["ErasureRequest", "ErasureResponse"]


class ErasureRequest(BaseModel):
    phone_number: str | int = Field(examples=["+12125550101"])


class ErasureResponse(BaseModel):
    status: str = Field(examples=["success"])
    phone_number: str = Field(description="The number erased, in E.164.")
    erased_as: str = Field(description="What the calls' `to` now holds: a keyed hash.")
    calls: int = Field(description="Ended calls to the number (erased now or before).")
    recordings: int = Field(description="Recordings deleted by this request.")
    transcript_turns: int
    summaries: int
    analyses: int
    row_properties: int = Field(description="Calls whose prompt and row values were erased.")
    live_calls: int = Field(
        description="Calls to the number still dialling or live, not erased: repeat the "
        "request once they have ended."
    )
    added_to_dnc: bool = Field(description="Whether the number was newly put on the DNC list.")
