"""`/v1/dnc`: the do-not-call list."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = [
    "DncAddForm",
    "DncAddRequest",
    "DncAdded",
    "DncCheck",
    "DncEntry",
    "DncList",
    "DncRejectedRow",
]


class DncAddRequest(BaseModel):
    """Send `phone_number` (one) or `phone_numbers` (several)."""

    phone_number: str | int | None = Field(default=None, examples=["+12125550101"])
    phone_numbers: list[str | int] | None = Field(default=None, min_length=1)
    reason: str | None = Field(default=None, max_length=500)


class DncAddForm(BaseModel):
    """`POST /v1/dnc` as `multipart/form-data`: a CSV of numbers."""

    file: bytes = Field(
        description="A CSV with a header row (UTF-8, with or without BOM; comma, semicolon "
        "or tab). The number column is `phone_number` or `phone`, `number`, `to` (any case) "
        "or the one `phone_column` names; a `reason` column, if any, is each number's reason."
    )
    batch: str | None = Field(
        default=None,
        description='Optional JSON object: `{"phone_column": "<column name>", "reason": '
        '"<the reason of rows without their own>"}`.',
    )


class DncRejectedRow(BaseModel):
    index: int = Field(description="The row's position among the CSV's data rows (0-based).")
    line: int | None = Field(default=None, description="The row's line in the CSV file.")
    phone_number: str | None
    errors: list[dict[str, str]]


class DncEntry(BaseModel):
    phone_number: str
    reason: str | None
    source: str = Field(
        description="`api`; `call` when the callee opted out on a call (words, keypad or "
        "the agent's `opt_out` tool); `disposition` when a call's post-call disposition "
        "was DO_NOT_CONTACT."
    )
    call_id: str | None = Field(
        default=None, description="The call on which the callee opted out (else null)."
    )
    created_at: str


class DncAdded(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    added: int = Field(description="Numbers newly on the list.")
    phone_numbers: list[str] = Field(description="The numbers sent, in E.164.")
    rejected: list[DncRejectedRow] = Field(
        default_factory=list,
        description="A CSV upload's rows that were not added, each with its CSV line and "
        "why; the other rows were added.",
    )


class DncList(BaseModel):
    status: str = Field(examples=["success"])
    entries: list[DncEntry]


class DncCheck(BaseModel):
    status: str = Field(examples=["success"])
    phone_number: str
    on_list: bool
    entry: DncEntry | None
