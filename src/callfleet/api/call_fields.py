"""The Send Call fields: their types, ranges, legacy aliases, and how a call's are resolved.

The same fields are accepted on `POST /v1/calls`, at the top of a batch (applied to
every call), and inside a `call_data` row (overriding the batch value for that
call). They are validated strictly: a string where a boolean belongs is an error,
not a guess. `resolve_fields` returns the call's parameters as stored with the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callfleet.agent.dynamic_data import parse_dynamic_data
from callfleet.agent.options import parse_tools
from callfleet.api.errors import pydantic_errors
from callfleet.domain.errors import FieldError, InvalidInput
from callfleet.domain.phones import PhoneNumberError, normalize_phone
from callfleet.domain.retry import parse_retry
from callfleet.domain.windows import parse_window
from callfleet.webhooks.ssrf import InvalidWebhookUrl, check_url_syntax

__all__ = [
    "CALL_FIELDS",
    "CallFields",
    "LEGACY_ALIASES",
    "check_fields",
    "parse_start_time",
    "resolve_fields",
]


class PronunciationEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    word: str = Field(min_length=1)
    pronunciation: str
    case_sensitive: bool = False
    case_insensitive: bool | None = None  # what the official SDK sends
    spaced: bool = False


class CallFields(BaseModel):
    """Every Send Call field except `phone_number`; all optional."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    task: str | None = None
    from_: str | None = Field(default=None, alias="from")
    first_sentence: str | None = Field(default=None, max_length=2000)
    wait_for_greeting: bool | None = None
    max_duration: float | None = Field(default=None, gt=0, le=720)
    record: bool | None = None
    webhook: str | None = None
    metadata: dict[str, Any] | None = None
    request_data: dict[str, Any] | None = None
    voice: str | None = None
    language: str | None = Field(default=None, max_length=20)
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    interruption_threshold: float | None = Field(default=None, ge=0, le=10_000)
    block_interruptions: bool | None = None
    keywords: list[str] | None = None
    pronunciation_guide: list[PronunciationEntry] | None = None
    transfer_phone_number: str | int | None = None
    transfer_list: dict[str, str] | None = None
    voicemail_message: str | None = None
    voicemail_action: Literal["hangup", "leave_message", "ignore"] | None = None
    answered_by_enabled: bool | None = None
    retry: dict[str, Any] | None = None
    start_time: str | None = None
    timezone: str | None = None
    dynamic_data: list[dict[str, Any]] | None = None
    tools: list[Any] | None = None
    summary_prompt: str | None = Field(default=None, max_length=2000)
    analysis_schema: dict[str, Any] | None = None
    analysis_prompt: str | None = Field(default=None, max_length=4000)
    dispositions: list[str] | None = Field(default=None, max_length=100)
    available_tags: list[str] | None = Field(default=None, max_length=100)  # legacy name
    calling_window: dict[str, Any] | None = None
    script: list[str] | None = None
    # Legacy aliases that existing clients still send.
    voice_id: str | int | None = None
    reduce_latency: bool | None = None
    amd: bool | None = None
    voice_settings: dict[str, Any] | bool | None = None  # the official SDK sends a bool
    voice_preset_id: str | None = None


CALL_FIELDS: frozenset[str] = frozenset(
    (f.alias or name) for name, f in CallFields.model_fields.items()
)
LEGACY_ALIASES = {"voice_id": "voice", "voice_preset_id": "voice"}
# Fields whose type is a union of several types; their errors name each member.
UNION_FIELDS: frozenset[str] = frozenset(
    (f.alias or name)
    for name, f in CallFields.model_fields.items()
    if len([a for a in get_args(f.annotation) if a is not type(None)]) > 1
)

DEFAULTS: dict[str, Any] = {
    "wait_for_greeting": False,
    "max_duration": 30.0,
    "record": False,
    "block_interruptions": False,
    "answered_by_enabled": False,
    "voicemail_action": "hangup",
    "temperature": 0.7,
    "interruption_threshold": 500.0,
}

_START_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M %z")
# Scheduling adds days to a start time (windows, retries); keep clear of datetime.max.
_LATEST_START = datetime(9999, 1, 1, tzinfo=UTC)


def _as_utc(parsed: datetime, value: str, field: str) -> datetime:
    try:
        out = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:
        if parsed.year == 1:  # before 0001-01-01 UTC: long past, so "now"
            return datetime.min.replace(tzinfo=UTC)
        out = _LATEST_START
    if out >= _LATEST_START:
        raise InvalidInput(
            [FieldError(field, f"{value!r} is too far in the future; use a year before 9999.")]
        )
    return out


def parse_start_time(value: str, field: str) -> datetime:
    """`YYYY-MM-DD HH:MM:SS -HH:MM` (UTC when no offset) or ISO 8601, as aware UTC."""
    text = value.strip()
    for fmt in _START_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _as_utc(parsed, value, field)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            [
                FieldError(
                    field,
                    f"{value!r} is not a date and time; write it as 'YYYY-MM-DD HH:MM:SS -HH:MM', "
                    "for example '2026-12-01 09:30:00 -05:00' (no offset means UTC).",
                )
            ]
        ) from None
    return _as_utc(parsed, value, field)


def _validate_only(raw: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], list[FieldError]]:
    """Type-check the known fields present in `raw`; return them (unset ones dropped)."""
    known = {k: v for k, v in raw.items() if k in CALL_FIELDS and v is not None}
    if not known:
        return {}, []
    try:
        model = CallFields.model_validate(known)
    except ValidationError as exc:
        return {}, pydantic_errors(exc.errors(), [prefix] if prefix else [], UNION_FIELDS)
    data = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: v for k, v in data.items() if k in known}, []


def _schema_errors(schema: Any, path: str, depth: int = 0) -> list[FieldError]:
    """`analysis_schema`: keys to a type name or description, a nested object, or a
    one-item list of either (an array of that)."""
    if isinstance(schema, list):
        if len(schema) != 1:
            return [FieldError(path, 'A list gives the type of its items: ["string"].')]
        return _schema_errors(schema[0], f"{path}[0]", depth + 1)
    if isinstance(schema, dict) and depth < 5:
        errors = []
        for key, spec in schema.items():
            errors.extend(_schema_errors(spec, f"{path}.{key}", depth + 1))
        return errors
    if isinstance(schema, str) and schema.strip() and depth > 0:
        return []
    return [
        FieldError(
            path,
            'Must map each key to a type name or description, such as {"email": "string", '
            '"wants_callback": "boolean", "budget": "number"}.',
        )
    ]


def check_fields(
    raw: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[FieldError]]:
    """Validate the Send Call fields present in one object (types, ranges, formats).

    Returns the validated subset (JSON-ready, legacy aliases still present) and the errors.
    """
    data, errors = _validate_only(raw, prefix)
    if errors:
        return data, errors

    def path(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if "webhook" in data:
        try:
            check_url_syntax(data["webhook"])
        except InvalidWebhookUrl as exc:
            errors.append(FieldError(path("webhook"), str(exc)))
    if "transfer_phone_number" in data:
        try:
            data["transfer_phone_number"] = normalize_phone(data["transfer_phone_number"])
        except PhoneNumberError as exc:
            errors.append(FieldError(path("transfer_phone_number"), exc.reason))
    if "transfer_list" in data:
        for department, number in data["transfer_list"].items():
            try:
                data["transfer_list"][department] = normalize_phone(number)
            except PhoneNumberError as exc:
                errors.append(FieldError(path(f"transfer_list.{department}"), exc.reason))
    # The agent's own parsers decide what it can use; they name the entry at fault.
    if "tools" in data:
        problems = parse_tools(data["tools"], url_required=False)[1]
        errors.extend(FieldError(path(where), why) for where, why in problems)
    if "dynamic_data" in data:
        problems = parse_dynamic_data(data["dynamic_data"])[1]
        errors.extend(FieldError(path(where), why) for where, why in problems)
    if "timezone" in data:
        try:
            ZoneInfo(data["timezone"])
        except (ZoneInfoNotFoundError, ValueError, OSError):
            errors.append(
                FieldError(
                    path("timezone"),
                    f"{data['timezone']!r} is not a time zone; use an IANA name "
                    "such as 'America/New_York'.",
                )
            )
    for name, parse in (("calling_window", parse_window), ("retry", parse_retry)):
        if name in data:
            try:
                parse(data[name], path(name))
            except InvalidInput as exc:
                errors.extend(exc.errors)
    if "start_time" in data:
        try:
            parse_start_time(data["start_time"], path("start_time"))
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if "analysis_schema" in data:
        errors.extend(_schema_errors(data["analysis_schema"], path("analysis_schema")))
    for name in ("dispositions", "available_tags"):
        for i, tag in enumerate(data.get(name, ())):
            if not tag.strip() or len(tag) > 100:
                errors.append(
                    FieldError(f"{path(name)}[{i}]", "Must be a tag of 1 to 100 characters.")
                )
    return data, errors


def resolve_fields(batch_level: Mapping[str, Any], row_level: Mapping[str, Any]) -> dict[str, Any]:
    """The call's parameters: defaults, then the batch's values, then the row's overrides."""
    merged: dict[str, Any] = dict(DEFAULTS)
    merged.update(batch_level)
    merged.update(row_level)
    for legacy, modern in LEGACY_ALIASES.items():
        if legacy in merged:
            value = merged.pop(legacy)
            merged.setdefault(modern, str(value))
    return merged
