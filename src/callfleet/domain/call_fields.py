"""A call's Send Call fields: their types, limits, defaults, legacy aliases and checks.

The same fields are accepted on `POST /v1/calls`, at the top of a batch (applied to
every call), and inside a `call_data` row (overriding the batch value for that call).
`CallFields` is their typed model: strict, so a string where a boolean belongs is an
error, not a guess. `check_values` then judges what types cannot (URLs, numbers, time
zones, windows, retries, start times, tools, `dynamic_data`, analysis schemas, tags),
one named step per kind, each naming the field at fault. `resolve_fields` is the
call's parameters as stored with the call: defaults, then the batch, then the row,
with the legacy aliases folded into their modern names. What the agent makes of the
stored parameters is `callfleet.domain.conversation`; which accepted fields have no
effect in a deployment is `callfleet.domain.capabilities`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from .errors import FieldError, InvalidInput
from .opt_out import OPT_OUT_DIGITS
from .phones import PhoneNumberError, normalize_phone
from .retry import parse_retry
from .templating import render
from .tools import late_bound_names, parse_dynamic_data, parse_tools
from .urls import InvalidWebhookUrl, check_url_syntax
from .windows import parse_window

__all__ = [
    "BATCH_LIMITS",
    "CALL_FIELDS",
    "DEFAULTS",
    "FIELD_LIMITS",
    "LEGACY_ALIASES",
    "PREVIEW_ROWS",
    "REHEARSAL_ROWS_DEFAULT",
    "REHEARSAL_ROWS_MAX",
    "UNION_FIELDS",
    "CallFields",
    "PronunciationEntry",
    "Limit",
    "check_values",
    "expand_call",
    "render_texts",
    "limit_errors",
    "limits_markdown",
    "json_size",
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
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
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
    opt_out_digit: str | None = None
    guard_rails: list[Any] | None = None  # names, or objects naming them (`type`)
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


@dataclass(frozen=True)
class Limit:
    """How big one field may be. `None` means that bound does not apply to the field.

    `chars`: a text's length in characters. `items`: entries in a list or object.
    `item_chars`: each entry's length in a list of texts. `bytes`: the value's size as
    compact JSON (UTF-8). `depth`: how deeply objects and arrays nest inside it.
    `note` describes a field whose type bounds it (a boolean, a number in a range).
    """

    chars: int | None = None
    items: int | None = None
    item_chars: int | None = None
    bytes: int | None = None
    depth: int | None = None
    note: str = ""

    def describe(self) -> str:
        """The limit in words, for the README's table and the error messages."""
        parts = [
            f"{n} {unit}"
            for n, unit in (
                (self.chars, "characters"),
                (self.items, "entries"),
                (self.item_chars, "characters per entry"),
                (self.bytes, "bytes of JSON"),
                (self.depth, "levels of nesting"),
            )
            if n is not None
        ]
        if not parts:
            return self.note
        return "at most " + ", ".join(parts) + (f" ({self.note})" if self.note else "")


_SCALAR = Limit(note="one value (its range is in the model)")
_TEXT = Limit(chars=2000)
_NAME = Limit(chars=200)
_NUMBER = Limit(chars=32)
_SMALL_JSON = Limit(items=20, bytes=4096, depth=4)
_DATA = Limit(items=100, bytes=16_384, depth=8)

FIELD_LIMITS: dict[str, Limit] = {
    "task": Limit(chars=50_000),
    "from": _NUMBER,
    "first_sentence": _TEXT,
    "wait_for_greeting": _SCALAR,
    "max_duration": _SCALAR,
    "record": _SCALAR,
    "retention_days": _SCALAR,
    "webhook": Limit(chars=2048),
    "metadata": _DATA,
    "request_data": _DATA,
    "voice": _NAME,
    "language": Limit(chars=20),
    "model": _NAME,
    "temperature": _SCALAR,
    "interruption_threshold": _SCALAR,
    "block_interruptions": _SCALAR,
    "keywords": Limit(items=100, item_chars=100),
    "pronunciation_guide": Limit(items=100, bytes=32_768, depth=2),
    "transfer_phone_number": _NUMBER,
    "transfer_list": Limit(items=50, bytes=8192, depth=1),
    "voicemail_message": _TEXT,
    "voicemail_action": _SCALAR,
    "answered_by_enabled": _SCALAR,
    "retry": _SMALL_JSON,
    "start_time": Limit(chars=64),
    "timezone": Limit(chars=64),
    "dynamic_data": Limit(items=10, bytes=32_768, depth=8),
    "tools": Limit(items=20, bytes=65_536, depth=10),
    "summary_prompt": _TEXT,
    "analysis_schema": Limit(items=100, bytes=16_384, depth=6),
    "analysis_prompt": Limit(chars=4000),
    "dispositions": Limit(items=100, item_chars=100),
    "available_tags": Limit(items=100, item_chars=100),
    "calling_window": _SMALL_JSON,
    "script": Limit(items=100, bytes=32_768, depth=1),
    "opt_out_digit": Limit(chars=1, note="one of 0-9, * or #"),
    "guard_rails": Limit(items=20, bytes=4096, depth=3),
    "voice_id": _NAME,
    "reduce_latency": _SCALAR,
    "amd": _SCALAR,
    "voice_settings": _SMALL_JSON,
    "voice_preset_id": _NAME,
}
"""Every Send Call field's limit (a test checks that each field of `CallFields` has one)."""

BATCH_LIMITS: dict[str, Limit] = {
    "base_prompt": Limit(chars=50_000),
    "label": Limit(chars=500),
    "campaign_id": Limit(chars=200),
    "batch_webhook": Limit(chars=2048),
    "call_data": Limit(
        bytes=65_536, note="per row; at most CALLFLEET_MAX_BATCH_ROWS rows, 100,000 by default"
    ),
    "dry_run": Limit(note="a boolean; true checks and renders, stores nothing, dials nobody"),
    "rehearsal": Limit(note="a boolean; true calls the simulator's personas, not the rows"),
    "rehearsal_rows": Limit(note="an integer from 1 to 20, 4 by default"),
}
"""The batch's own fields; `call_data`'s `bytes` is each row's size."""

REHEARSAL_ROWS_DEFAULT = 4
"""How many of a batch's first rows a rehearsal calls when `rehearsal_rows` is not given."""
REHEARSAL_ROWS_MAX = 20
"""The most rows one rehearsal calls (five of each of the simulator's four personas)."""
PREVIEW_ROWS = 5
"""How many rendered prompts a dry run (the dashboard's Preview) returns."""


def limits_markdown() -> str:
    """The README's limits table, from `BATCH_LIMITS` and `FIELD_LIMITS`."""
    lines = ["| Field | Limit |", "|---|---|"]
    for name, limit in {**BATCH_LIMITS, **FIELD_LIMITS}.items():
        lines.append(f"| `{name}` | {limit.describe()} |")
    return "\n".join(lines)


def _depth(value: Any) -> int:
    """How deeply `value` nests (a scalar is 0, `[]` is 1); the body's own cap bounds it."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def json_size(value: Any) -> int:
    """`value`'s size as compact JSON, in bytes."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _over(limit: Limit, value: Any) -> str | None:
    """What about `value` is over `limit`, or None."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        n = len(str(value))
        return (
            f"At most {limit.chars} characters, got {n}."
            if limit.chars and n > limit.chars
            else None
        )
    if not isinstance(value, dict | list):
        return None
    if limit.items is not None and len(value) > limit.items:
        return f"At most {limit.items} entries, got {len(value)}."
    if limit.item_chars is not None and isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str) and len(item) > limit.item_chars:
                return (
                    f"At most {limit.item_chars} characters per entry; entry {i} has {len(item)}."
                )
    if limit.depth is not None and _depth(value) > limit.depth:
        return f"At most {limit.depth} levels of nesting."
    if limit.bytes is not None and (size := json_size(value)) > limit.bytes:
        return f"At most {limit.bytes} bytes as JSON, got {size}."
    return None


def limit_errors(
    data: Mapping[str, Any], limits: Mapping[str, Limit], path: Callable[[str], str]
) -> list[FieldError]:
    """The fields of `data` over their limit in `limits`, named by `path`."""
    errors: list[FieldError] = []
    for name, value in data.items():
        limit = limits.get(name)
        why = _over(limit, value) if limit is not None else None
        if why is not None:
            errors.append(FieldError(path(name), why))
    return errors


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


Path = Callable[[str], str]


def _webhook_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    if "webhook" not in data:
        return []
    try:
        check_url_syntax(data["webhook"])
    except InvalidWebhookUrl as exc:
        return [FieldError(path("webhook"), str(exc))]
    return []


def _transfer_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    """Check the transfer numbers, and write them back in E.164."""
    errors: list[FieldError] = []
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
    return errors


def _request_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    """`tools` and `dynamic_data`: the parsers the agent acts on name the entry at fault.

    A tool without a `url` is no error here (the official SDK's `CustomTool` type has
    no `url` field), though it has no effect; `capabilities` warns about it.
    """
    errors: list[FieldError] = []
    if "tools" in data:
        problems = parse_tools(data["tools"], url_required=False)[1]
        errors.extend(FieldError(path(where), why) for where, why in problems)
    if "dynamic_data" in data:
        problems = parse_dynamic_data(data["dynamic_data"])[1]
        errors.extend(FieldError(path(where), why) for where, why in problems)
    return errors


def _timezone_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    if "timezone" not in data:
        return []
    try:
        ZoneInfo(data["timezone"])
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return [
            FieldError(
                path("timezone"),
                f"{data['timezone']!r} is not a time zone; use an IANA name "
                "such as 'America/New_York'.",
            )
        ]
    return []


def _schedule_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    """`calling_window`, `retry` and `start_time`, by the parsers scheduling uses."""
    errors: list[FieldError] = []
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
    return errors


def _analysis_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    """`analysis_schema`, and the tags of `dispositions` (or its legacy `available_tags`)."""
    errors: list[FieldError] = []
    if "analysis_schema" in data:
        errors.extend(_schema_errors(data["analysis_schema"], path("analysis_schema")))
    for name in ("dispositions", "available_tags"):
        for i, tag in enumerate(data.get(name, ())):
            if not tag.strip() or len(tag) > 100:
                errors.append(
                    FieldError(f"{path(name)}[{i}]", "Must be a tag of 1 to 100 characters.")
                )
    return errors


def _opt_out_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    digit = data.get("opt_out_digit")
    if digit is None or digit in OPT_OUT_DIGITS:
        return []
    return [
        FieldError(
            path("opt_out_digit"),
            f'{digit!r} is not a keypad key; use one of 0-9, * or # (for example "9").',
        )
    ]


def _size_errors(data: dict[str, Any], path: Path) -> list[FieldError]:
    return limit_errors(data, FIELD_LIMITS, path)


_VALUE_CHECKS = (
    _size_errors,
    _webhook_errors,
    _transfer_errors,
    _request_errors,
    _timezone_errors,
    _schedule_errors,
    _analysis_errors,
    _opt_out_errors,
)


def check_values(data: dict[str, Any], prefix: str = "") -> list[FieldError]:
    """What `CallFields`' types cannot judge, for fields already type-checked.

    `data` is `CallFields`' JSON dump of one object; transfer numbers are rewritten in
    it in E.164. Errors are named under `prefix` (`call_data[3]`), in field order.
    """

    def path(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    # Nothing else is judged of a value over its limit (parsing it would cost).
    return _size_errors(data, path) or [
        error for check in _VALUE_CHECKS[1:] for error in check(data, path)
    ]


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


# Texts rendered with each row's properties, besides the prompt itself.
RENDERED_FIELDS = ("first_sentence", "voicemail_message", "summary_prompt")


def _template_values(params: Mapping[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    if "dynamic_data" in params or "tools" in params:
        # Names the agent fills in during the call stay as written until then.
        late = {name: f"{{{{{name}}}}}" for name in late_bound_names(params)}
        return {**late, **variables}
    return variables


def render_texts(
    base_prompt: str, params: Mapping[str, Any], variables: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The call's task and its other rendered texts; raises MissingVariables."""
    values = _template_values(params, variables)
    task = render(base_prompt, values)
    rendered: dict[str, Any] = {
        name: render(str(params[name]), values) for name in RENDERED_FIELDS if params.get(name)
    }
    if isinstance(params.get("script"), list):
        rendered["script"] = [render(str(line), values) for line in params["script"]]
    return task, rendered


def expand_call(
    base_prompt: str,
    batch_level: Mapping[str, Any],
    overrides: Mapping[str, Any],
    own_variables: Mapping[str, Any],
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A batch call's task, parameters and variables from what is stored once on the
    batch (`base_prompt`, its fields) and what the call row holds (the row's overrides
    and its own variables): exactly what submission rendered and checked."""
    params = resolve_fields(batch_level, overrides)
    variables = {
        **(batch_level.get("request_data") or {}),
        **(overrides.get("request_data") or {}),
        **own_variables,
    }
    task, rendered = render_texts(base_prompt, params, variables)
    params.update(rendered)
    return task, params, variables
