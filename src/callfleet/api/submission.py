"""Turning a Send-a-Batch request into call rows: validation, templating, scheduling.

A body that is not the contract's shape is rejected whole, naming every offending
index. Within a well-formed body each row stands alone: a bad number, a missing
placeholder, a do-not-call number, a duplicate or a bad override rejects that row
only, and the response lists it with its index and reason. Nothing is written
until every row has been judged, and then everything is written in one
transaction, so a request is never half-applied. Accepted fields that have no
effect in this deployment are named in `warnings`, the batch's first, then each
accepted row's own (`call_data[3].voice: ...`); see `callfleet.domain.capabilities`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from callfleet.api.call_fields import check_fields
from callfleet.api.errors import ApiError
from callfleet.config import Settings
from callfleet.domain.call_fields import (
    BATCH_LIMITS,
    CALL_FIELDS,
    PREVIEW_ROWS,
    REHEARSAL_ROWS_DEFAULT,
    REHEARSAL_ROWS_MAX,
    json_size,
    limit_errors,
    parse_start_time,
    render_texts,
    resolve_fields,
)
from callfleet.domain.capabilities import Deployment, ineffective_fields, unsupported_row_keys
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import (
    PhoneNumberError,
    is_fictional_number,
    normalize_phone,
    timezone_for_number,
    timezones_for_number,
)
from callfleet.domain.rehearsal import stand_in_for
from callfleet.domain.retry import parse_retry
from callfleet.domain.states import CallState, QueueStatus
from callfleet.domain.templating import MissingVariables
from callfleet.domain.urls import InvalidWebhookUrl, check_url_syntax
from callfleet.domain.windows import (
    DEFAULT_WINDOW,
    UNRESTRICTED,
    CallingWindow,
    Rule,
    callee_rules,
    narrow,
    next_open_all,
    parse_calling_hours,
    parse_window,
)
from callfleet.store.calls import queued_elsewhere
from callfleet.store.dnc import dnc_hits
from callfleet.store.ids import new_id
from callfleet.store.numbers import POOL_PREFIX, owned_numbers

__all__ = [
    "BATCH_FIELDS",
    "CallRow",
    "PreparedCalls",
    "prepare_calls",
    "rehearsal_calls",
    "rehearsal_warnings",
]

BATCH_FIELDS = frozenset(
    {
        "base_prompt",
        "call_data",
        "label",
        "campaign_id",
        "test_mode",
        "batch_webhook",
        "dry_run",
        "rehearsal",
        "rehearsal_rows",
    }
)
ROW_BYTES = BATCH_LIMITS["call_data"].bytes or 0
"""The largest `call_data` row, as compact JSON."""
MAX_ROW_WARNINGS = 100
"""Row warnings listed one by one; past this many, one line counts the rest."""


@dataclass
class CallRow:
    """One call ready to insert."""

    index: int
    values: dict[str, Any]


@dataclass
class PreparedCalls:
    rows: list[CallRow] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """`field_warnings`, then the accepted rows' own (`call_data[3].voice: ...`)."""
    batch_fields: dict[str, Any] = field(default_factory=dict)
    field_warnings: list[str] = field(default_factory=list)
    """The batch-level (or single call's) fields that have no effect in this deployment."""
    first: tuple[str, dict[str, Any]] | None = None
    """The first accepted row's full task and parameters, as the dialler will see them."""
    previews: list[dict[str, Any]] = field(default_factory=list)
    """The first PREVIEW_ROWS accepted rows' rendered texts (a dry run's `preview`)."""


def deployment_of(settings: Settings) -> Deployment:
    """What this deployment's configuration does with a call's fields (whether an
    agent talks on answered calls is `Settings.agent_on_calls`, as for the wiring)."""
    return Deployment(
        agent=settings.agent_on_calls,
        tts=settings.tts_provider,
        stt=settings.stt_provider,
        llm=bool(settings.llm_base_url),
    )


def _reject(out: PreparedCalls, index: int, raw_number: Any, errors: Sequence[FieldError]) -> None:
    out.rejected.append(
        {
            "index": index,
            "phone_number": raw_number if isinstance(raw_number, str | int) else None,
            "errors": [{"field": e.field, "message": e.message} for e in errors],
        }
    )


def check_from(value: str, owned: set[str], path: str, errors: list[FieldError]) -> str | None:
    """The caller ID `value` names: one of `owned` (E.164 numbers and `pool:NAME`s)."""
    if value.startswith(POOL_PREFIX):
        if value in owned:
            return value
        errors.append(
            FieldError(
                path,
                f"this account has no numbers in pool {value[len(POOL_PREFIX) :]!r}; put some "
                'in it with POST /v1/numbers {"phone_number": ..., "pool": "NAME"}.',
            )
        )
        return None
    try:
        number = normalize_phone(value)
    except PhoneNumberError as exc:
        errors.append(FieldError(path, exc.reason))
        return None
    if number not in owned:
        errors.append(
            FieldError(
                path,
                f"{number} is not one of this account's numbers; add it with POST /v1/numbers "
                "or leave `from` out to use the default caller ID.",
            )
        )
        return None
    return number


def check_batch_shape(body: Mapping[str, Any], settings: Settings) -> list[FieldError]:
    """The whole-request checks: anything here rejects the request with 400 (or 413)."""
    errors: list[FieldError] = []
    prompt = body.get("base_prompt")
    if prompt is None:
        errors.append(FieldError("base_prompt", "This field is required: the agent's task."))
    elif not isinstance(prompt, str) or not prompt.strip():
        errors.append(FieldError("base_prompt", "Must be a non-empty string."))
    rows = body.get("call_data")
    if rows is None:
        errors.append(
            FieldError("call_data", "This field is required: a list of calls, one object each.")
        )
    elif not isinstance(rows, list):
        errors.append(
            FieldError("call_data", f"Must be an array of objects, got {type(rows).__name__}.")
        )
    elif not rows:
        errors.append(FieldError("call_data", "Must hold at least one call."))
    else:
        if len(rows) > settings.max_batch_rows:
            raise ApiError(
                413,
                f"A batch holds at most {settings.max_batch_rows} calls and this one has "
                f"{len(rows)}; split it into several batches (a campaign_id groups them).",
                [FieldError("call_data", f"At most {settings.max_batch_rows} rows.")],
            )
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                errors.append(
                    FieldError(f"call_data[{i}]", f"Must be an object, got {type(row).__name__}.")
                )
            elif row.get("phone_number") in (None, ""):
                errors.append(
                    FieldError(f"call_data[{i}].phone_number", "Every call needs a phone_number.")
                )
            elif (size := json_size(row)) > ROW_BYTES:
                errors.append(
                    FieldError(
                        f"call_data[{i}]",
                        f"At most {ROW_BYTES} bytes of JSON per row, got {size}; keep a row "
                        "to the callee's own values and put shared ones at the batch level.",
                    )
                )
    for name, kind in (
        ("label", str),
        ("campaign_id", str),
        ("test_mode", bool),
        ("dry_run", bool),
        ("rehearsal", bool),
    ):
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            errors.append(FieldError(name, f"Must be a {kind.__name__}, got {value!r}."))
    errors.extend(_rehearsal_errors(body))
    sized = {k: body.get(k) for k in ("base_prompt", "label", "campaign_id", "batch_webhook")}
    errors.extend(
        limit_errors(
            {k: v for k, v in sized.items() if isinstance(v, str)}, BATCH_LIMITS, lambda name: name
        )
    )
    hook = body.get("batch_webhook")
    if hook is not None:
        try:
            if not isinstance(hook, str):
                raise InvalidWebhookUrl("Must be a URL string.")
            check_url_syntax(hook)
        except InvalidWebhookUrl as exc:
            errors.append(FieldError("batch_webhook", str(exc)))
    return errors


def _rehearsal_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """`rehearsal_rows` is a whole number of rows in range, and only with a rehearsal;
    a rehearsal is not also a test call."""
    errors: list[FieldError] = []
    rows = body.get("rehearsal_rows")
    if rows is not None:
        if isinstance(rows, bool) or not isinstance(rows, int):
            errors.append(FieldError("rehearsal_rows", f"Must be an integer, got {rows!r}."))
        elif not 1 <= rows <= REHEARSAL_ROWS_MAX:
            errors.append(
                FieldError(
                    "rehearsal_rows",
                    f"Must be from 1 to {REHEARSAL_ROWS_MAX} (five calls to each of the "
                    f"simulator's four personas at most), got {rows}.",
                )
            )
        elif body.get("rehearsal") is not True:
            errors.append(
                FieldError(
                    "rehearsal_rows",
                    'Only applies to a rehearsal; add `"rehearsal": true` or leave it out.',
                )
            )
    if body.get("rehearsal") is True and body.get("test_mode") is True:
        errors.append(
            FieldError(
                "test_mode",
                "A rehearsal already calls nobody real; send either `rehearsal` or "
                "`test_mode`, not both.",
            )
        )
    return errors


@dataclass
class _Pending:
    """A row whose number and fields passed the first pass."""

    index: int
    to: str
    overrides: dict[str, Any]
    notes: list[tuple[str, str]] = field(default_factory=list)
    """Warnings about the row found while building it (its window narrowed, say)."""


@dataclass
class _Batch:
    """What every row of one request shares."""

    account_id: str
    batch_id: str | None
    now: datetime
    base_prompt: str
    batch_fields: Mapping[str, Any]
    owned: set[str]
    batch_from: str | None
    default_window: CallingWindow
    shared_vars: dict[str, Any]
    base_params: dict[str, Any]
    deployment: Deployment
    batch_notes: tuple[tuple[str, str], ...]
    """The batch-level fields' warnings, which a row inheriting them need not repeat."""
    floor: CallingWindow | None
    """The operator's calling hours (CALLFLEET_CALLING_HOURS); None: off."""
    window_notes: tuple[tuple[str, str], ...]
    """The floor narrowed the batch's window: said only if it narrows a row's."""
    floor_hit: bool = False
    """Some row with the batch's window is under the floor (not a fictional number)."""
    first: tuple[str, dict[str, Any]] | None = None
    """The first accepted row's full task and parameters (for `test_mode`)."""
    previews: list[dict[str, Any]] = field(default_factory=list)
    # Most rows share a handful of time zones: compute each window opening once.
    opens_at: dict[tuple[tuple[Rule, ...], datetime], datetime | None] = field(default_factory=dict)
    rules: dict[tuple[CallingWindow, tuple[str, ...], bool], tuple[Rule, ...]] = field(
        default_factory=dict
    )


def _shared(
    conn: Connection,
    settings: Settings,
    account_id: str,
    batch_id: str | None,
    now: datetime,
    base_prompt: str,
    batch_fields: Mapping[str, Any],
) -> _Batch:
    """The batch-level settings; raises ApiError(400) for a bad batch-level `from`."""
    owned = owned_numbers(conn, account_id)
    errors: list[FieldError] = []
    batch_from = None
    if "from" in batch_fields:
        batch_from = check_from(str(batch_fields["from"]), owned, "from", errors)
        if errors:
            raise ApiError(400, errors[0].message, errors)
    floor = parse_calling_hours(settings.calling_hours)
    notes: list[tuple[str, str]] = []
    default_window = DEFAULT_WINDOW
    if "calling_window" in batch_fields:
        default_window = parse_window(batch_fields["calling_window"], "calling_window")
        problem = _narrowing(default_window, floor, notes)
        if problem is not None:
            raise ApiError(400, problem, [FieldError("calling_window", problem)])
    deployment = deployment_of(settings)
    return _Batch(
        account_id=account_id,
        batch_id=batch_id,
        now=now,
        base_prompt=base_prompt,
        batch_fields=batch_fields,
        owned=owned,
        batch_from=batch_from,
        default_window=default_window,
        deployment=deployment,
        batch_notes=tuple(ineffective_fields(batch_fields, deployment)),
        floor=floor,
        window_notes=tuple(notes),
        shared_vars=dict(batch_fields.get("request_data") or {}),
        # Most rows share the batch's settings: resolve them once.
        base_params=resolve_fields(batch_fields, {}),
    )


def _judge_numbers_and_fields(
    out: PreparedCalls, rows: Sequence[Mapping[str, Any]]
) -> list[_Pending]:
    """First pass: each row's number (valid, not a duplicate) and its own fields."""
    numbers_seen: dict[str, int] = {}
    pending: list[_Pending] = []
    for i, row in enumerate(rows):
        prefix = f"call_data[{i}]"
        raw = row["phone_number"]
        try:
            to = normalize_phone(raw)
        except PhoneNumberError as exc:
            _reject(out, i, raw, [FieldError(f"{prefix}.phone_number", exc.reason)])
            continue
        if to in numbers_seen:
            _reject(
                out,
                i,
                raw,
                [
                    FieldError(
                        f"{prefix}.phone_number",
                        f"{to} is already in this batch at call_data[{numbers_seen[to]}]; "
                        "each number is called once per batch.",
                    )
                ],
            )
            continue
        overrides: dict[str, Any] = {}
        row_errors: list[FieldError] = []
        if any(k in CALL_FIELDS for k in row):
            overrides, row_errors = check_fields(row, prefix)
        if row_errors:
            _reject(out, i, raw, row_errors)
            continue
        numbers_seen[to] = i
        pending.append(_Pending(i, to, overrides))
    return pending


def _dnc_error(prefix: str, to: str) -> FieldError:
    return FieldError(
        f"{prefix}.phone_number",
        f"{to} is on this account's do-not-call list; remove it with "
        "DELETE /v1/dnc if the person has agreed to be called.",
    )


def _elsewhere_warning(prefix: str, to: str, other_batch: str) -> str:
    return (
        f"{prefix}.phone_number: {to} is already queued in batch {other_batch}; both calls "
        "will ring it (within CALLFLEET_NUMBER_DAILY_CAP a day), so remove one if that is "
        "not what you want."
    )


def _missing_error(prefix: str, exc: MissingVariables) -> FieldError:
    names = ", ".join(exc.names)
    one = len(exc.names) == 1
    return FieldError(
        prefix,
        f"The prompt uses {names} but this row does not supply "
        f"{'it' if one else 'them'}; add "
        f"{'that property' if one else 'those properties'} "
        "to the row (or to request_data).",
    )


def _narrowing(
    window: CallingWindow, floor: CallingWindow | None, notes: list[tuple[str, str]]
) -> str | None:
    """Why `window` cannot be used under the operator's hours, or None; a note in
    `notes` when they narrow it."""
    try:
        narrowed, changed = narrow(window, floor)
    except ValueError as exc:
        return f"{exc} (CALLFLEET_CALLING_HOURS)."
    if changed and floor is not None:
        hours = f"{floor.to_json()['start']}-{floor.to_json()['end']}"
        now_reads = (
            f"calls go only when both it and {hours} in the callee's local time allow"
            if window.timezone
            else f"it now reads {narrowed.to_json()['start']}-{narrowed.to_json()['end']}"
        )
        notes.append(
            (
                "calling_window",
                f"narrowed to the operator's calling hours {hours} (CALLFLEET_CALLING_HOURS): "
                f"{now_reads}",
            )
        )
    return None


def _not_before(
    shared: _Batch, rules: tuple[Rule, ...], params: Mapping[str, Any]
) -> datetime | None:
    """When the call may first be dialled: its start time, inside its calling window
    in every zone the callee may be in; None if that never happens."""
    now = shared.now
    start = parse_start_time(params["start_time"], "") if "start_time" in params else now
    key = (rules, start)
    if key not in shared.opens_at:
        shared.opens_at[key] = next_open_all(rules, max(start, now))
    return shared.opens_at[key]


def _schedule_errors(
    shared: _Batch, pending: _Pending, window: CallingWindow, params: Mapping[str, Any]
) -> tuple[str | None, datetime | None, list[FieldError]]:
    """The call's stored zone and first instant, or why it cannot be scheduled."""
    prefix = f"call_data[{pending.index}]"
    explicit = params.get("timezone")
    zones = (explicit,) if explicit else timezones_for_number(pending.to)
    if not zones:
        return (
            None,
            None,
            [
                FieldError(
                    f"{prefix}.timezone",
                    f"the time zone of {pending.to} is unknown, and a call is never placed on "
                    'a guess; give the row a "timezone" like "Europe/Berlin".',
                )
            ],
        )
    # Most rows share a window and a few zones: their rules are worked out once.
    key = (window, zones, is_fictional_number(pending.to))
    rules = shared.rules.get(key)
    if rules is None:
        rules = shared.rules[key] = callee_rules(window, zones, None if key[2] else shared.floor)
    not_before = _not_before(shared, rules, params)
    if not_before is None:
        return (
            None,
            None,
            [
                FieldError(
                    f"{prefix}.calling_window",
                    f"the calling window is never open in every time zone {pending.to} may be in "
                    f"({', '.join(sorted(zones))}) within two weeks; give the row its callee's "
                    '"timezone", or a wider calling_window.',
                )
            ],
        )
    return explicit or timezone_for_number(pending.to), not_before, []


def _row_warnings(shared: _Batch, pending: _Pending, row: Mapping[str, Any]) -> list[str]:
    """The row's own fields that have no effect here, and its unsupported Send Call keys."""
    notes = unsupported_row_keys(row) + pending.notes
    if pending.overrides:
        merged = {**shared.batch_fields, **pending.overrides}
        notes += [
            n for n in ineffective_fields(merged, shared.deployment) if n not in shared.batch_notes
        ]
    return [f"call_data[{pending.index}].{name}: {why}" for name, why in notes]


def _keep_preview(shared: _Batch, index: int, to: str, task: str, params: dict[str, Any]) -> None:
    """Keep the first PREVIEW_ROWS rows' rendered texts (a dry run shows them)."""
    if len(shared.previews) < PREVIEW_ROWS:
        shared.previews.append(
            {
                "index": index,
                "phone_number": to,
                "rendered_prompt": task,
                "first_sentence": params.get("first_sentence"),
                "voicemail_message": params.get("voicemail_message"),
            }
        )


def _stored_texts(
    shared: _Batch,
    task: str,
    params: dict[str, Any],
    overrides: dict[str, Any],
    variables: dict[str, Any],
    props: dict[str, Any],
) -> dict[str, Any]:
    """What the call row keeps of its texts and parameters.

    A batch's shared fields and prompt are stored once, on the batch: a batch call
    keeps only its row's overrides and own properties, with an empty `task` saying
    so, and `domain.call_fields.expand_call` gives back the rest when it is read. The
    first row also keeps its full task and parameters in memory for `test_mode`'s report.
    A single call (no batch) keeps everything.
    """
    if shared.batch_id is None:
        return {
            "task": task,
            "params": params,
            "request_data": variables,
            "metadata": params.get("metadata"),
        }
    if shared.first is None:
        shared.first = (task, params)
    return {
        "task": "",
        "params": overrides,
        "request_data": props,
        "metadata": overrides.get("metadata"),
    }


def _build_row(
    shared: _Batch, pending: _Pending, row: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Second pass for one row: its parameters, texts, caller ID and schedule."""
    i, to, overrides = pending.index, pending.to, pending.overrides
    prefix = f"call_data[{i}]"
    row_errors: list[FieldError] = []
    params = (
        resolve_fields(shared.batch_fields, overrides) if overrides else dict(shared.base_params)
    )
    from_number = shared.batch_from
    if "from" in overrides:
        from_number = check_from(str(overrides["from"]), shared.owned, f"{prefix}.from", row_errors)
    props = {k: v for k, v in row.items() if k not in CALL_FIELDS}
    props["phone_number"] = to
    variables = {**shared.shared_vars, **(overrides.get("request_data") or {}), **props}
    try:
        task, rendered = render_texts(shared.base_prompt, params, variables)
    except MissingVariables as exc:
        row_errors.append(_missing_error(prefix, exc))
    if row_errors:
        return None, row_errors
    params.update(rendered)
    _keep_preview(shared, i, to, task, params)
    window = shared.default_window
    if "calling_window" not in overrides and not is_fictional_number(to):
        shared.floor_hit = True
    if "calling_window" in overrides:
        window = parse_window(overrides["calling_window"], f"{prefix}.calling_window")
        exempt = is_fictional_number(to)
        problem = _narrowing(window, shared.floor, [] if exempt else pending.notes)
        if problem is not None:
            return None, [FieldError(f"{prefix}.calling_window", problem)]
    zone, not_before, schedule_errors = _schedule_errors(shared, pending, window, params)
    if not_before is None:
        return None, schedule_errors
    retry = parse_retry(params["retry"], "retry") if "retry" in params else None
    return {
        "id": new_id(),
        "account_id": shared.account_id,
        "batch_id": shared.batch_id,
        "seq": i,
        "to_number": to,
        "from_number": from_number,
        "callee_tz": zone,
        **_stored_texts(shared, task, params, overrides, variables, props),
        "webhook": params.get("webhook"),
        "state": CallState.QUEUED,
        "queue_status": QueueStatus.QUEUED,
        "attempt": 1,
        "attempts_allowed": retry.max_attempts if retry else 1,
        "retry": params.get("retry"),
        "window": None if window == DEFAULT_WINDOW else window.to_json(),
        "max_duration": float(params["max_duration"]),
        "record": bool(params["record"]),
        "not_before": not_before,
        "created_at": shared.now,
    }, []


def prepare_calls(
    conn: Connection,
    *,
    account_id: str,
    settings: Settings,
    base_prompt: str,
    batch_fields: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    now: datetime,
    batch_id: str | None,
) -> PreparedCalls:
    """Judge every row and build the call rows of the good ones.

    `batch_fields` are the batch-level Send Call fields, already type-checked.
    Raises ApiError(400) for a bad batch-level `from`.
    """
    out = PreparedCalls(batch_fields=dict(batch_fields))
    shared = _shared(conn, settings, account_id, batch_id, now, base_prompt, batch_fields)
    out.field_warnings = [f"{name}: {why}" for name, why in shared.batch_notes]
    row_warnings: list[str] = []
    pending = _judge_numbers_and_fields(out, rows)
    blocked = dnc_hits(conn, account_id, [p.to for p in pending])
    elsewhere = queued_elsewhere(conn, account_id, [p.to for p in pending], batch_id)
    for candidate in pending:
        row = rows[candidate.index]
        prefix = f"call_data[{candidate.index}]"
        if candidate.to in blocked:
            _reject(out, candidate.index, row["phone_number"], [_dnc_error(prefix, candidate.to)])
            continue
        values, row_errors = _build_row(shared, candidate, row)
        if values is None:
            _reject(out, candidate.index, row["phone_number"], row_errors)
            continue
        out.rows.append(CallRow(candidate.index, values))
        row_warnings.extend(_row_warnings(shared, candidate, row))
        if candidate.to in elsewhere:
            row_warnings.append(_elsewhere_warning(prefix, candidate.to, elsewhere[candidate.to]))
    if len(row_warnings) > MAX_ROW_WARNINGS:
        more = len(row_warnings) - MAX_ROW_WARNINGS
        del row_warnings[MAX_ROW_WARNINGS:]
        row_warnings.append(f"... and {more} more warnings about rows, like those above.")
    if shared.floor_hit:
        out.field_warnings += [f"{name}: {why}" for name, why in shared.window_notes]
    out.warnings = out.field_warnings + row_warnings
    out.first = shared.first
    out.previews = shared.previews
    return out


# A rehearsal (`"rehearsal": true`): the first accepted rows, each calling one of the
# phone simulator's personas (`callfleet.domain.rehearsal`) in place of its number.


def rehearsal_calls(prepared: PreparedCalls, count: int | None, now: datetime) -> list[CallRow]:
    """The first `count` (default 4) accepted rows as rehearsal calls.

    Each keeps its row's properties and rendered texts (the prompt reads as it will
    for the real callee, `{{phone_number}}` included) but dials a simulator persona,
    records the row it stands in for in `rehearsal_of`, dials at once (no calling
    window or start time: nobody real is called), and is tried once. The real number
    is neither dialled nor counted against its do-not-call entry or frequency caps.
    """
    chosen = prepared.rows[: count or REHEARSAL_ROWS_DEFAULT]
    out: list[CallRow] = []
    for position, row in enumerate(chosen):
        stand_in = stand_in_for(position)
        real = row.values["to_number"]
        values = {
            **row.values,
            "to_number": stand_in.number,
            "rehearsal_of": stand_in.record(row.index, real),
            "window": UNRESTRICTED.to_json(),
            "not_before": now,
            "attempts_allowed": 1,
            "retry": None,
        }
        out.append(CallRow(row.index, values))
    return out


def rehearsal_warnings(batch_fields: Mapping[str, Any], settings: Settings) -> list[str]:
    """What a rehearsal does differently from the batch it rehearses, said once."""
    notes: list[str] = []
    for name in ("calling_window", "start_time", "retry"):
        if name in batch_fields:
            notes.append(
                f"{name}: a rehearsal dials its calls at once and tries each once; "
                f"`{name}` applies when the batch itself is sent."
            )
    if not settings.agent_on_calls:
        notes.append(
            "rehearsal: no agent talks on this deployment's calls (the agent is off, the "
            "simulator runs at time scale 0, or CALLFLEET_CARRIER is simulator-nomedia), "
            "so the rehearsal shows outcomes but no conversation."
        )
    return notes
