"""`/v1/batches`: the Send a Batch body (the seed) and the batch objects returned."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from callfleet.api.schemas.calls import CallSettings, CallSummary, _describe_fields
from callfleet.api.schemas.common import json_body

__all__ = [
    "AppendCallsForm",
    "AppendCallsRequest",
    "AppendCallsResponse",
    "BatchAnalysis",
    "BatchDetails",
    "BatchList",
    "BatchObject",
    "SendBatchForm",
    "BatchStateResponse",
    "SendBatchRequest",
    "SendBatchResponse",
    "StopBatchResponse",
    "StoredAnalyses",
    "json_or_csv_body",
]


class CallDataRow(BaseModel):
    """One call of a batch. Its other keys are the call's properties (they fill the
    prompt's placeholders); a key that is a Send Call field overrides the batch's value
    for this call."""

    model_config = ConfigDict(extra="allow")

    phone_number: str | int = Field(
        description="Who to call (E.164, or a NANP number without the +1).",
        examples=["+12125550101"],
    )


class SendBatchRequest(CallSettings):
    """`POST /v1/batches`. Every Send Call field is accepted at the top and applied to each
    call. Unknown fields are ignored and listed in `warnings`."""

    model_config = ConfigDict(json_schema_extra=_describe_fields)

    base_prompt: str = Field(
        min_length=1,
        description="The agent's task for every call; `{{name}}` and `{name}` are filled "
        "from each row's properties.",
        examples=["Remind {{name}} about the appointment tomorrow at 10."],
    )
    call_data: list[CallDataRow] = Field(
        min_length=1,
        description="One object per call (at most the server's `max_batch_rows`; more is a 413).",
        examples=[[{"phone_number": "+12125550101", "name": "Ada"}]],
    )
    label: str | None = Field(default=None, max_length=500, description="The batch's name.")
    campaign_id: str | None = Field(
        default=None,
        max_length=200,
        description="Groups related batches; created on first use.",
    )
    test_mode: bool | None = Field(
        default=None,
        description="Validate every row but dispatch only the first call; the response "
        "adds a `test` report.",
    )
    batch_webhook: str | None = Field(
        default=None, description="A URL that receives a POST when the batch completes."
    )
    dry_run: bool | None = Field(
        default=None,
        description="Judge and render every row, store nothing, dial nobody; the response "
        "has `preview` (the first rows' rendered texts) and `validation` (every row).",
    )
    rehearsal: bool | None = Field(
        default=None,
        description="Call the first `rehearsal_rows` good rows' prompts to the phone "
        "simulator's people (a person, one who talks over the agent, a silent one, a "
        "voicemail box) in place of the rows' numbers, never through a trunk; the batch "
        "is marked `rehearsal: true`.",
    )
    rehearsal_rows: int | None = Field(
        default=None, ge=1, le=20, description="How many rows a rehearsal calls (default 4)."
    )


class RowError(BaseModel):
    field: str
    message: str


class RejectedRow(BaseModel):
    """A `call_data` row that will not be dialled, and why."""

    index: int
    line: int | None = Field(
        default=None, description="With a CSV upload: the row's line in the file (header is 1)."
    )
    phone_number: str | int | None
    errors: list[RowError]


class Schedule(BaseModel):
    dial_now: int
    waiting_for_window_or_start_time: int
    next_dial_at: str | None


class SendBatchResponse(BaseModel):
    status: str = Field(examples=["success"])
    message: str = Field(description='"success"; anything else is an error.')
    batch_id: str | None = Field(
        default=None, description="The new batch; a dry run (`dry_run: true`) has none."
    )
    call_count: int = Field(description="How many calls were queued.")
    rejected: list[RejectedRow]
    warnings: list[str]
    schedule: Schedule
    test: dict[str, Any] | None = Field(
        default=None,
        description="With `test_mode`: the first call's rendered prompt, parameters, "
        "number and time, and the per-row validation report.",
    )
    rehearsal: dict[str, Any] | None = Field(
        default=None,
        description='With `rehearsal`: `{"rows": [{"index", "phone_number", "persona", '
        '"dialled"}]}`, each rehearsal call\'s row and the simulator number it dialled.',
    )
    dry_run: bool | None = Field(
        default=None,
        description="With `dry_run`: true, and there is no `batch_id`; `preview` and "
        "`validation` say what sending would do.",
    )
    preview: list[dict[str, Any]] | None = Field(
        default=None,
        description='With `dry_run`: the first 5 good rows, `{"index", "phone_number", '
        '"rendered_prompt", "first_sentence", "voicemail_message"}` (`line` from a CSV).',
    )
    validation: dict[str, Any] | None = Field(
        default=None,
        description='With `dry_run`: `{"rows", "valid", "rejected", "report"}`, every '
        "row's verdict in input order.",
    )


class BatchObject(BaseModel):
    batch_id: str
    id: str
    campaign_id: str
    created_at: str | None
    label: str
    base_prompt: str = Field(description="Unrendered.")
    endpoint_code: str = Field(examples=["api"])
    call_params: dict[str, Any] = Field(description="The batch-level Send Call fields.")
    status: str = Field(description="`running`, `paused`, `stopped` or `completed`.")
    total_calls: int
    completed_at: str | None
    test_mode: bool = False
    rehearsal: bool = Field(
        default=False, description="A rehearsal: its calls dialled the simulator's people."
    )


class BatchList(BaseModel):
    status: str = Field(examples=["success"])
    batches: list[BatchObject]


class BatchParams(BaseModel):
    """A BatchObject without `batch_id`."""

    id: str
    campaign_id: str
    created_at: str | None
    label: str
    base_prompt: str
    endpoint_code: str
    call_params: dict[str, Any]
    status: str
    total_calls: int
    completed_at: str | None
    test_mode: bool = False
    rehearsal: bool = False


class CallLengths(BaseModel):
    average: float
    average_nonzero: float
    summary: dict[str, int] = Field(description='Counts by length in seconds: "0-5" to "120+".')
    all: list[float]


class BatchAnalysis(BaseModel):
    total_calls: int
    completed_calls: int
    in_progress_calls: int
    queued_calls: int
    queue_statuses: dict[str, int]
    statuses: dict[str, int]
    call_lengths: CallLengths
    call_ids: list[str] = Field(description="Empty with `include_analysis=false`.")
    error_messages: list[str]
    endpoints: dict[str, int]
    latency_ms: Any


class BatchDetails(BaseModel):
    status: str = Field(examples=["success"])
    batch_params: BatchParams
    analysis: BatchAnalysis
    call_data: list[CallSummary] = Field(description="A page of the calls, in row order.")
    calls_total: int
    calls_offset: int


class StopBatchResponse(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    num_calls: int = Field(description="Calls cancelled before dialling.")
    live_calls_ending: int = Field(description="Calls in progress being hung up.")
    batch_id: str
    batch_status: str = Field(
        description="The batch's status after the request: `stopped`, or `completed` "
        "if it had finished before.",
        examples=["stopped"],
    )


class BatchStateResponse(BaseModel):
    """The answer to pause and resume: the batch's status after the request."""

    status: str = Field(examples=["success"])
    message: str
    batch_id: str
    batch_status: str = Field(
        description="`paused`, `running`, `stopped` or `completed`.", examples=["paused"]
    )


class StoredAnalysis(BaseModel):
    call_id: str
    batch_id: str | None
    goal: str
    questions: list[str]
    answers: list[str]


class StoredAnalyses(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    analysis: list[StoredAnalysis]


CSV_FILE_TEXT = (
    "A CSV file with a header row: UTF-8 with or without a BOM; comma, semicolon or tab "
    "separated. The phone column is `phone_number`, `phone`, `number` or `to` (case- and "
    "space-insensitive), or the one `phone_column` names; every other column is a row "
    "property. Errors and `rejected` rows name their CSV line."
)


class SendBatchForm(BaseModel):
    """`POST /v1/batches` as `multipart/form-data`: the calls as a CSV file."""

    file: bytes = Field(description=CSV_FILE_TEXT)
    batch: str = Field(
        description="A JSON object with every other field of the JSON body (`base_prompt`, "
        "`label`, the call settings...), and optionally `phone_column`: the name of the "
        "CSV's phone column.",
        examples=['{"base_prompt": "Remind {{name}} of tomorrow.", "label": "reminders"}'],
    )


class AppendCallsRequest(BaseModel):
    """`POST /v1/batches/{batch_id}/calls`: more rows, judged with the batch's prompt and
    settings."""

    call_data: list[CallDataRow] = Field(
        min_length=1, description="One object per call, as in Send a Batch."
    )


class AppendCallsForm(BaseModel):
    """`POST /v1/batches/{batch_id}/calls` as `multipart/form-data`."""

    file: bytes = Field(description=CSV_FILE_TEXT)
    batch: str | None = Field(
        default=None,
        description='Optional JSON object: `{"phone_column": "<column name>"}`.',
    )


class AppendCallsResponse(BaseModel):
    status: str = Field(examples=["success"])
    message: str
    batch_id: str
    call_count: int = Field(description="How many calls were appended and queued.")
    total_calls: int = Field(description="The batch's calls, the appended ones included.")
    rejected: list[RejectedRow]
    warnings: list[str]
    schedule: Schedule


def json_or_csv_body(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a body that is JSON or `multipart/form-data` with a CSV file."""
    out = json_body(json_model, idempotent=True)
    form = json_body(form_model)["requestBody"]["content"]["application/json"]
    out["requestBody"]["content"]["multipart/form-data"] = {
        **form,
        "encoding": {"file": {"contentType": "text/csv, text/plain, application/octet-stream"}},
    }
    return out
