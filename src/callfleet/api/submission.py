"""Turning a Send-a-Batch request into call rows: validation, templating, scheduling.

A body that is not the contract's shape is rejected whole, naming every offending
index. Within a well-formed body each row stands alone: a bad number, a missing
placeholder, a do-not-call number, a duplicate or a bad override rejects that row
only, and the response lists it with its index and reason. Nothing is written
until every row has been judged, and then everything is written in one
transaction, so a request is never half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.agent.options import late_bound_names
from callfleet.api.call_fields import CALL_FIELDS, check_fields, parse_start_time, resolve_fields
from callfleet.api.errors import ApiError
from callfleet.config import Settings
from callfleet.domain.errors import FieldError
from callfleet.domain.phones import PhoneNumberError, normalize_phone, timezone_for_number
from callfleet.domain.retry import parse_retry
from callfleet.domain.templating import MissingVariables, render
from callfleet.domain.windows import DEFAULT_WINDOW, next_open, parse_window
from callfleet.store.ids import new_id
from callfleet.store.tables import dnc, numbers
from callfleet.webhooks.ssrf import InvalidWebhookUrl, check_url_syntax

__all__ = ["BATCH_FIELDS", "CallRow", "PreparedCalls", "prepare_calls"]

BATCH_FIELDS = frozenset(
    {"base_prompt", "call_data", "label", "campaign_id", "test_mode", "batch_webhook"}
)
# Texts rendered with each row's properties, besides the prompt itself.
RENDERED_FIELDS = ("first_sentence", "voicemail_message", "summary_prompt")


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
    batch_fields: dict[str, Any] = field(default_factory=dict)


def _reject(out: PreparedCalls, index: int, raw_number: Any, errors: Sequence[FieldError]) -> None:
    out.rejected.append(
        {
            "index": index,
            "phone_number": raw_number if isinstance(raw_number, str | int) else None,
            "errors": [{"field": e.field, "message": e.message} for e in errors],
        }
    )


def owned_numbers(conn: Connection, account_id: str) -> set[str]:
    rows = conn.execute(sa.select(numbers.c.phone_number).where(numbers.c.account_id == account_id))
    return {r[0] for r in rows}


def dnc_hits(conn: Connection, account_id: str, candidates: Sequence[str]) -> set[str]:
    hits: set[str] = set()
    uniq = sorted(set(candidates))
    for start in range(0, len(uniq), 500):
        chunk = uniq[start : start + 500]
        rows = conn.execute(
            sa.select(dnc.c.phone_number).where(
                dnc.c.account_id == account_id, dnc.c.phone_number.in_(chunk)
            )
        )
        hits.update(r[0] for r in rows)
    return hits


def check_from(value: str, owned: set[str], path: str, errors: list[FieldError]) -> str | None:
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
    for name, kind in (("label", str), ("campaign_id", str), ("test_mode", bool)):
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            errors.append(FieldError(name, f"Must be a {kind.__name__}, got {value!r}."))
    for name, most in (("label", 500), ("campaign_id", 200)):
        value = body.get(name)
        if isinstance(value, str) and len(value) > most:
            errors.append(FieldError(name, f"At most {most} characters, got {len(value)}."))
    hook = body.get("batch_webhook")
    if hook is not None:
        try:
            if not isinstance(hook, str):
                raise InvalidWebhookUrl("Must be a URL string.")
            check_url_syntax(hook)
        except InvalidWebhookUrl as exc:
            errors.append(FieldError("batch_webhook", str(exc)))
    return errors


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
    owned = owned_numbers(conn, account_id)
    errors: list[FieldError] = []
    batch_from = None
    if "from" in batch_fields:
        batch_from = check_from(str(batch_fields["from"]), owned, "from", errors)
        if errors:
            raise ApiError(400, errors[0].message, errors)

    default_window = (
        parse_window(batch_fields["calling_window"], "calling_window")
        if "calling_window" in batch_fields
        else DEFAULT_WINDOW
    )
    shared_vars = dict(batch_fields.get("request_data") or {})

    numbers_seen: dict[str, int] = {}
    pending: list[tuple[int, str, dict[str, Any]]] = []
    for i, row in enumerate(rows):
        prefix = f"call_data[{i}]"
        row_errors: list[FieldError] = []
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
        if any(k in CALL_FIELDS for k in row):
            overrides, row_errors = check_fields(row, prefix)
        if row_errors:
            _reject(out, i, raw, row_errors)
            continue
        numbers_seen[to] = i
        pending.append((i, to, overrides))

    blocked = dnc_hits(conn, account_id, [to for _, to, _ in pending])
    # Most rows share the batch's settings and a handful of time zones: resolve the
    # one and compute each window opening once.
    base_params = resolve_fields(batch_fields, {})
    opens_at: dict[tuple[Any, str | None, datetime], datetime] = {}
    for i, to, overrides in pending:
        prefix = f"call_data[{i}]"
        row = rows[i]
        if to in blocked:
            _reject(
                out,
                i,
                row["phone_number"],
                [
                    FieldError(
                        f"{prefix}.phone_number",
                        f"{to} is on this account's do-not-call list; remove it with "
                        "DELETE /v1/dnc if the person has agreed to be called.",
                    )
                ],
            )
            continue
        row_errors = []
        params = resolve_fields(batch_fields, overrides) if overrides else dict(base_params)
        from_number = batch_from
        if "from" in overrides:
            from_number = check_from(str(overrides["from"]), owned, f"{prefix}.from", row_errors)
        props = {k: v for k, v in row.items() if k not in CALL_FIELDS}
        props["phone_number"] = to
        variables = {**shared_vars, **(overrides.get("request_data") or {}), **props}
        values = variables
        if "dynamic_data" in params or "tools" in params:
            # Names the agent fills in during the call stay as written until then.
            late = {name: f"{{{{{name}}}}}" for name in late_bound_names(params)}
            values = {**late, **variables}
        try:
            task = render(base_prompt, values)
            rendered: dict[str, Any] = {
                name: render(str(params[name]), values)
                for name in RENDERED_FIELDS
                if params.get(name)
            }
            if isinstance(params.get("script"), list):
                rendered["script"] = [render(str(line), values) for line in params["script"]]
        except MissingVariables as exc:
            names = ", ".join(exc.names)
            row_errors.append(
                FieldError(
                    prefix,
                    f"The prompt uses {names} but this row does not supply "
                    f"{'it' if len(exc.names) == 1 else 'them'}; add "
                    f"{'that property' if len(exc.names) == 1 else 'those properties'} "
                    "to the row (or to request_data).",
                )
            )
        if row_errors:
            _reject(out, i, row["phone_number"], row_errors)
            continue
        params.update(rendered)
        window = (
            parse_window(overrides["calling_window"], f"{prefix}.calling_window")
            if "calling_window" in overrides
            else default_window
        )
        zone = params.get("timezone") or timezone_for_number(to)
        start = parse_start_time(params["start_time"], "") if "start_time" in params else now
        opens_key = (window, zone, start)
        not_before = opens_at.get(opens_key)
        if not_before is None:
            not_before = opens_at[opens_key] = next_open(window, zone, max(start, now))
        retry = parse_retry(params["retry"], "retry") if "retry" in params else None
        out.rows.append(
            CallRow(
                i,
                {
                    "id": new_id(),
                    "account_id": account_id,
                    "batch_id": batch_id,
                    "seq": i,
                    "to_number": to,
                    "from_number": from_number,
                    "callee_tz": zone,
                    "task": task,
                    "params": params,
                    "request_data": variables,
                    "metadata": params.get("metadata"),
                    "webhook": params.get("webhook"),
                    "state": "queued",
                    "queue_status": "queued",
                    "attempt": 1,
                    "attempts_allowed": retry.max_attempts if retry else 1,
                    "retry": params.get("retry"),
                    "window": None if window == DEFAULT_WINDOW else window.to_json(),
                    "max_duration": float(params["max_duration"]),
                    "record": bool(params["record"]),
                    "not_before": not_before,
                    "created_at": now,
                },
            )
        )
    return out
