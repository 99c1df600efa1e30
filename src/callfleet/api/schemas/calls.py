"""`/v1/calls`: the Send Call body (the same fields a batch and its rows take), and the
call objects of `GET /v1/calls`, `GET /v1/calls/{call_id}` and a batch's `call_data`.

The request models extend `CallFields`, the validator the routes use, so the
documented fields, types and limits are the enforced ones; `CALL_FIELD_DOCS` adds
what each field means (API.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from callfleet.api.call_fields import CallFields

__all__ = [
    "CALL_FIELD_DOCS",
    "CallDetails",
    "CallList",
    "CallSettings",
    "CallSummary",
    "ListedCall",
    "SendCallRequest",
    "SendCallResponse",
    "TranscriptTurn",
]

CALL_FIELD_DOCS: dict[str, str] = {
    "task": "The agent's instructions. Placeholders `{{name}}` and `{name}` are filled "
    "from `request_data` and the call's other properties.",
    "from": "One of the account's numbers (POST /v1/numbers) to call from; left out, "
    "the default caller ID.",
    "first_sentence": "What the agent says first.",
    "wait_for_greeting": "Let the callee speak first. Default false.",
    "max_duration": "The longest the call may last, in minutes. Default 30.",
    "record": "Record the call (GET /v1/calls/{call_id}/recording). Default false.",
    "retention_days": "Delete the recording this many days after the call ends (1 to "
    "36,500); default CALLFLEET_RECORDING_RETENTION_DAYS (keep when unset).",
    "webhook": "A URL that receives the call details object when the call ends.",
    "metadata": "Any JSON object, returned with the call and in its webhook.",
    "request_data": "Facts the agent knows; also fill the prompt's placeholders.",
    "voice": "The voice's name or id.",
    "language": "The language tag, such as `en-US`.",
    "model": "The LLM model to ask for; the hosted product's tier names keep the configured one.",
    "temperature": "The LLM's sampling temperature, 0 to 1. Default 0.7.",
    "interruption_threshold": "How long (ms) the callee must speak to interrupt the "
    "agent. Default 500.",
    "block_interruptions": "The agent is never interrupted. Default false.",
    "keywords": "Words the speech recogniser should expect.",
    "pronunciation_guide": "How to say particular words.",
    "transfer_phone_number": "Where the agent transfers the call when asked.",
    "transfer_list": "Departments to their transfer numbers.",
    "voicemail_message": "What the agent leaves on a voicemail (with "
    "`voicemail_action: leave_message`).",
    "voicemail_action": "What to do on reaching voicemail. Default `hangup`.",
    "answered_by_enabled": "Detect whether a person or a machine answered. Default false.",
    "retry": "Outcome-aware retries: attempts, delay, which outcomes.",
    "start_time": "When to call: `YYYY-MM-DD HH:MM:SS -HH:MM` (UTC without an offset) "
    "or ISO 8601; a past time means now.",
    "timezone": "The callee's IANA time zone, such as `America/New_York`; by default "
    "derived from the number.",
    "dynamic_data": "HTTP requests whose answers the agent knows.",
    "tools": "HTTP tools the agent may call during the call.",
    "summary_prompt": "How to summarise the call after it ends.",
    "analysis_schema": "Keys to extract after the call, each to a type name or "
    'description, such as {"email": "string"}.',
    "analysis_prompt": "Instructions for the post-call analysis.",
    "dispositions": "Tags the post-call analysis chooses one of.",
    "available_tags": "Legacy name of `dispositions`.",
    "calling_window": 'When the callee may be called, in their local time: {"start": '
    '"09:00", "end": "20:00", "days": ["mon", ..., "sun"], "timezone": null}.',
    "script": "Lines the agent says in order.",
    "voice_id": "Legacy alias of `voice`.",
    "reduce_latency": "Legacy; accepted and ignored.",
    "amd": "Legacy; accepted.",
    "voice_settings": "Legacy; accepted.",
    "voice_preset_id": "Legacy alias of `voice`.",
}


def _describe_fields(schema: dict[str, Any]) -> None:
    for name, prop in schema.get("properties", {}).items():
        if name in CALL_FIELD_DOCS:
            prop.setdefault("description", CALL_FIELD_DOCS[name])


class CallSettings(CallFields):
    """The Send Call fields, all optional. Unknown fields are accepted and listed in the
    response's `warnings`."""

    model_config = ConfigDict(json_schema_extra=_describe_fields)


class SendCallRequest(CallSettings):
    """`POST /v1/calls`: one call. Fields other than the Send Call ones are kept in the
    call's `request_data`."""

    model_config = ConfigDict(
        json_schema_extra=_describe_fields,
    )

    phone_number: str | int = Field(
        description="Who to call. E.164, or a NANP number without the +1; spaces, "
        "dashes, dots and parentheses are dropped.",
        examples=["+12125550101"],
    )
    task: str = Field(
        min_length=1,
        description=CALL_FIELD_DOCS["task"],
        examples=["Remind {{name}} about the appointment tomorrow at 10."],
    )


class SendCallResponse(BaseModel):
    status: str = Field(description='"success".', examples=["success"])
    message: str = Field(examples=["Call successfully queued."])
    call_id: str
    batch_id: None = Field(description="Always null for a single call.")
    scheduled_for: str = Field(description="When the call may be dialled first (ISO 8601).")
    warnings: list[str] = Field(description="Unknown fields that were kept in request_data.")


class TranscriptTurn(BaseModel):
    id: int
    created_at: str | None
    text: str
    user: str = Field(description="`user`, `assistant`, `robot` or `agent-action`.")


class ListedCall(BaseModel):
    """A call as `GET /v1/calls` lists it. Strings are "" rather than null."""

    model_config = ConfigDict(populate_by_name=True)

    call_id: str
    createdAt: str | None = Field(description="When the call was created (ISO 8601).")
    to: str = Field(description="The callee's number (E.164).")
    from_: str = Field(alias="from", description='The caller ID; "" for the default.')
    completed: bool
    queue_status: str = Field(
        description="`queued`, `allocated`, `started`, `complete`, or where an error "
        "happened (`pre_queue_error`, `queue_error`, `call_error`, `complete_error`)."
    )
    status: str | None = Field(
        description="The outcome: `completed`, `busy`, `no-answer`, `declined`, `failed`, "
        "`canceled`, `voicemail`; null until there is one."
    )
    call_length: float = Field(description="Minutes.")
    answered_by: str
    error_message: str
    batch_id: str = Field(description='"" for a single call.')
    attempt: int
    scheduled_for: str | None = Field(description="When a queued call may be dialled.")
    summary: str | None = Field(
        default=None, description="The post-call summary; null until there is one."
    )
    disposition_tag: str | None = Field(default=None, description="The post-call disposition.")
    analysis: Any = Field(default=None, description="The post-call analysis (an object), or null.")
    opted_out: bool = Field(
        default=False,
        description="The callee asked on this call not to be called again (in words, on "
        "the keypad with `opt_out_digit`, or by a post-call DO_NOT_CONTACT disposition): "
        "the number is on the account's do-not-call list.",
    )
    metadata: Any = Field(default=None, description="The call's (or its batch's) metadata.")
    rehearsal_of: dict[str, Any] | None = Field(
        default=None,
        description='A rehearsal call: the row it stood in for, `{"index", "phone_number", '
        '"persona", "dialled"}` (`phone_number` is the row\'s own, never dialled); null '
        "for every real call.",
    )


class CallSummary(ListedCall):
    """A call in a batch's `call_data`."""

    created_at: str | None
    transcripts: list[TranscriptTurn] | None = Field(
        default=None, description="With `include_transcripts` (the default)."
    )


class CallList(BaseModel):
    status: str = Field(examples=["success"])
    count: int = Field(description="How many calls match the filters.")
    calls: list[ListedCall]


class CallTranscriptTurn(TranscriptTurn):
    c_id: str


class CallDetails(ListedCall):
    """`GET /v1/calls/{call_id}`, and the body of the call's webhook."""

    created_at: str | None
    c_id: str
    started_at: str | None
    answered_at: str | None
    end_at: str | None
    max_duration: float = Field(description="Minutes.")
    endpoint_url: str
    corrected_duration: float
    request_data: dict[str, str]
    variables: dict[str, str]
    metadata: Any
    transcripts: list[CallTranscriptTurn]
    concatenated_transcript: str
    record: bool
    recording_url: str | None
    recording_state: str | None = Field(
        description="null (no recording), `uploading`, `stored`, `deleted`, `expired`, "
        "`erased` or `lost`."
    )
    recording_expires_at: str | None = Field(description="When the retention sweeper deletes it.")
    recording_expired_at: str | None = Field(description="When retention deleted it.")
    recording_deleted_at: str | None = Field(description="When it was deleted or erased.")
    summary: str | None
    analysis: Any
    call_ended_by: str | None = Field(description="`ASSISTANT` or `USER`.")
    disposition_tag: str | None
    postcall_state: str | None = Field(description='null, "pending", "done" or "failed".')
    model: str | None
    latency_ms: Any = Field(description="The agent's reply latency, when it spoke.")


WAV_FILE: dict[str, Any] = {
    "description": "The call's recording (WAV).",
    "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
}
