"""The Send Call fields as the API reads them: type-checked, then judged value by value.

The model, limits, defaults and aliases are `callfleet.domain.call_fields` (re-exported
here); this module turns pydantic's type errors into the API's field errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from callfleet.api.errors import pydantic_errors
from callfleet.domain.call_fields import (
    CALL_FIELDS,
    DEFAULTS,
    LEGACY_ALIASES,
    UNION_FIELDS,
    CallFields,
    check_values,
    parse_start_time,
    resolve_fields,
)
from callfleet.domain.errors import FieldError

__all__ = [
    "CALL_FIELDS",
    "DEFAULTS",
    "LEGACY_ALIASES",
    "CallFields",
    "check_fields",
    "parse_start_time",
    "resolve_fields",
]


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


def check_fields(
    raw: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[FieldError]]:
    """Validate the Send Call fields present in one object (types, ranges, formats).

    Returns the validated subset (JSON-ready, legacy aliases still present) and the errors.
    """
    data, errors = _validate_only(raw, prefix)
    if errors:
        return data, errors
    return data, check_values(data, prefix)
