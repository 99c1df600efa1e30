"""Retry policies: whether, and when, to ring a callee again after an attempt ends.

A `RetryPolicy` caps the total number of attempts, sets the wait between them
and names the outcomes worth another try (`no-answer`, `busy`, `voicemail`,
`failed`). Some outcomes are never retried whatever the policy says: a callee
who declined or asked not to be called again must not be re-rung, and a
completed or canceled call is over. `parse_retry` reads the `retry` field in
either of two shapes: ours (`max_attempts`, `delay_minutes`, `on`) and the one
clients of the hosted product send (`wait` in seconds plus voicemail settings,
meaning "if the call reached voicemail, try once more after `wait` seconds").
`retry_delay` is what the dispatcher asks when an attempt ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from .errors import FieldError, InvalidInput
from .states import Outcome

__all__ = ["NO_RETRY", "RETRYABLE_OUTCOMES", "RetryPolicy", "parse_retry", "retry_delay"]

RETRYABLE_OUTCOMES = frozenset({Outcome.NO_ANSWER, Outcome.BUSY, Outcome.VOICEMAIL, Outcome.FAILED})
"""The call outcomes a policy may retry on."""

_NEVER_RETRIED: dict[str, str] = {
    Outcome.DECLINED: "the callee refused the call, and a refusal is never retried",
    Outcome.CANCELED: "a canceled call was stopped on purpose and is never retried",
    Outcome.COMPLETED: "a completed call reached the callee and is never retried",
}
_DEFAULT_ON = frozenset({Outcome.NO_ANSWER, Outcome.BUSY, Outcome.FAILED})
_MAX_ATTEMPTS = 10
_MAX_DELAY_MINUTES = 7 * 24 * 60
_OUR_KEYS = ("max_attempts", "delay_minutes", "on")
_LEGACY_KEYS = ("wait", "voicemail_action", "voicemail_message")
_VOICEMAIL_ACTIONS = ("hangup", "leave_message", "ignore")


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` attempts in all, `delay_minutes` apart, retrying on `on`."""

    max_attempts: int = 1
    delay_minutes: float = 0
    on: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Accept any iterable of outcomes but store a frozenset, so policies stay hashable.
        object.__setattr__(self, "on", frozenset(self.on))
        if not 1 <= self.max_attempts <= _MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be 1 to {_MAX_ATTEMPTS}, got {self.max_attempts}")
        if not 0 <= self.delay_minutes <= _MAX_DELAY_MINUTES:
            raise ValueError(
                f"delay_minutes must be 0 to {_MAX_DELAY_MINUTES}, got {self.delay_minutes}"
            )
        unknown = self.on - RETRYABLE_OUTCOMES
        if unknown:
            raise ValueError(f"cannot retry on {sorted(unknown)}")


NO_RETRY = RetryPolicy()
"""One attempt and no more."""


def parse_retry(value: object, field: str) -> RetryPolicy:
    """Read a `retry` object from a request body.

    Our shape is `{"max_attempts": 1..10, "delay_minutes": 0..10080, "on": [...]}`,
    where `max_attempts` counts the first attempt and `on` defaults to
    `["no-answer", "busy", "failed"]`. The hosted product's shape
    `{"wait": seconds, "voicemail_action": ..., "voicemail_message": ...}` becomes
    one retry on voicemail after `wait` seconds. `field` is the path of the object
    in the request, used to name the offending field in errors. Raises
    `InvalidInput` listing every problem found.
    """
    if not isinstance(value, dict):
        raise InvalidInput(
            [
                FieldError(
                    field,
                    'must be an object like {"max_attempts": 3, "delay_minutes": 60, '
                    '"on": ["no-answer", "busy"]}',
                )
            ]
        )
    if not value:
        return NO_RETRY
    errors: list[FieldError] = []
    ours = [key for key in _OUR_KEYS if key in value]
    legacy = [key for key in _LEGACY_KEYS if key in value]
    for key in value:
        if key not in _OUR_KEYS and key not in _LEGACY_KEYS:
            errors.append(
                FieldError(
                    f"{field}.{key}",
                    f"{key!r} is not a retry setting; use max_attempts, delay_minutes and on",
                )
            )
    if ours and legacy:
        errors.append(
            FieldError(
                field,
                f"mixes {', '.join(ours)} with {', '.join(legacy)}; use either max_attempts, "
                "delay_minutes and on, or the older wait, voicemail_action and voicemail_message",
            )
        )
        raise InvalidInput(errors)
    policy = _parse_legacy(value, field, errors) if legacy else _parse_ours(value, field, errors)
    if errors or policy is None:
        raise InvalidInput(errors)
    return policy


def retry_delay(
    policy: RetryPolicy, outcome: str, attempt: int, *, opted_out: bool = False
) -> timedelta | None:
    """How long to wait before the next attempt, or None if there is no next attempt.

    `attempt` is the 1-based number of the attempt that just ended with `outcome`.
    A callee who declined or opted out is never called again.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if opted_out or outcome in _NEVER_RETRIED or outcome not in policy.on:
        return None
    if attempt >= policy.max_attempts:
        return None
    return timedelta(minutes=policy.delay_minutes)


def _parse_ours(
    value: dict[object, object], field: str, errors: list[FieldError]
) -> RetryPolicy | None:
    max_attempts = _number(
        value.get("max_attempts"),
        f"{field}.max_attempts",
        errors,
        low=1,
        high=_MAX_ATTEMPTS,
        integer=True,
        meaning="the total number of attempts, counting the first",
    )
    delay: float | None = 0
    if value.get("delay_minutes") is not None:
        delay = _number(
            value["delay_minutes"],
            f"{field}.delay_minutes",
            errors,
            low=0,
            high=_MAX_DELAY_MINUTES,
            integer=False,
            meaning="the minutes to wait between attempts",
        )
    # With a single attempt nothing is retried, so the default outcomes would only
    # make the policy differ from NO_RETRY without changing what happens.
    on: frozenset[str] | None = _DEFAULT_ON if max_attempts != 1 else frozenset()
    if value.get("on") is not None:
        on = _parse_outcomes(value["on"], f"{field}.on", errors)
    if max_attempts is None or delay is None or on is None:
        return None
    return RetryPolicy(int(max_attempts), delay, on)


def _parse_legacy(
    value: dict[object, object], field: str, errors: list[FieldError]
) -> RetryPolicy | None:
    wait = _number(
        value.get("wait"),
        f"{field}.wait",
        errors,
        low=0,
        high=_MAX_DELAY_MINUTES * 60,
        integer=False,
        meaning="the seconds to wait before calling again after voicemail",
    )
    action = value.get("voicemail_action")
    if action is not None and action not in _VOICEMAIL_ACTIONS:
        errors.append(
            FieldError(
                f"{field}.voicemail_action",
                f"{action!r} is not a voicemail action; use hangup, leave_message or ignore",
            )
        )
    message = value.get("voicemail_message")
    if message is not None and not isinstance(message, str):
        errors.append(
            FieldError(f"{field}.voicemail_message", "must be a string: the message to leave")
        )
    if wait is None:
        return None
    return RetryPolicy(2, wait / 60, frozenset({Outcome.VOICEMAIL}))


def _number(
    value: object,
    path: str,
    errors: list[FieldError],
    *,
    low: float,
    high: float,
    integer: bool,
    meaning: str,
) -> float | None:
    kind = "a whole number" if integer else "a number"
    expected = f"{kind} from {low:g} to {high:g}, {meaning}"
    if value is None:
        errors.append(FieldError(path, f"is required: {expected}"))
        return None
    # bool is a subclass of int, and true/false are never meant as counts.
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(FieldError(path, f"must be {expected}"))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError(path, f"must be {expected}"))
        return None
    # Compared before any conversion: float() of a huge JSON integer overflows.
    if not low <= value <= high:
        errors.append(FieldError(path, f"{value!r} is out of range: use {expected}"))
        return None
    if integer and not float(value).is_integer():
        errors.append(FieldError(path, f"{value!r} is not a whole number: use {expected}"))
        return None
    return float(value)


def _parse_outcomes(value: object, path: str, errors: list[FieldError]) -> frozenset[str] | None:
    listed = ", ".join(sorted(RETRYABLE_OUTCOMES))
    if not isinstance(value, list | tuple):
        errors.append(FieldError(path, f"must be an array of outcomes, chosen from {listed}"))
        return None
    outcomes: set[str] = set()
    ok = True
    for index, item in enumerate(value):
        name = item.strip().lower().replace("_", "-") if isinstance(item, str) else None
        if name in RETRYABLE_OUTCOMES:
            outcomes.add(name)
            continue
        ok = False
        if name in _NEVER_RETRIED:
            message = f"cannot retry on {name!r}: {_NEVER_RETRIED[name]}"
        else:
            message = f"{item!r} is not an outcome that can be retried; use {listed}"
        errors.append(FieldError(f"{path}[{index}]", message))
    return frozenset(outcomes) if ok else None
