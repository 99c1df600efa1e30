"""`POST /v1/calls/{call_id}/analyze` and `POST /v1/batches/{batch_id}/analyze`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

__all__ = ["AnalyzeBatchResponse", "AnalyzeCallResponse", "AnalyzeRequest"]


class AnalyzeRequest(BaseModel):
    goal: str | None = Field(default=None, description="What the calls were for.")
    questions: list[Annotated[list[str], Field(min_length=1, max_length=2)]] = Field(
        min_length=1,
        description="Each question with its answer type: [question] or [question, answer_type].",
        examples=[[["Who answered?", "string"], ["Did they agree?", "boolean"]]],
    )


class AnalyzeCallResponse(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    answers: list[list[Any]] = Field(description="One list: an answer per question.")
    credits_used: float


class AnalyzeBatchResponse(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    answers: dict[str, list[Any]] = Field(description="Each ended call's answers.")
    credits_used: float
