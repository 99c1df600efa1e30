"""Tests for retry policies: parsing both request shapes and deciding on a next attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callfleet.domain import InvalidInput
from callfleet.domain.retry import NO_RETRY, RetryPolicy, parse_retry, retry_delay

OUTCOMES = ["completed", "busy", "no-answer", "declined", "failed", "canceled", "voicemail"]


def errors_of(value: object) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        parse_retry(value, "call_data[2].retry")
    return {error.field: error.message for error in caught.value.errors}


def test_parse_reads_our_shape() -> None:
    policy = parse_retry(
        {"max_attempts": 3, "delay_minutes": 90, "on": ["busy", "voicemail"]}, "retry"
    )
    assert policy == RetryPolicy(3, 90, frozenset({"busy", "voicemail"}))


def test_outcomes_default_to_no_answer_busy_and_failed_when_retrying() -> None:
    assert parse_retry({"max_attempts": 2}, "retry") == RetryPolicy(
        2, 0, frozenset({"no-answer", "busy", "failed"})
    )


def test_a_single_attempt_or_an_empty_object_is_no_retry() -> None:
    assert parse_retry({}, "retry") == NO_RETRY
    assert parse_retry({"max_attempts": 1}, "retry") == NO_RETRY
    assert RetryPolicy(1, 0, frozenset()) == NO_RETRY


def test_outcome_names_are_forgiving_about_case_and_underscores() -> None:
    policy = parse_retry({"max_attempts": 2, "on": ["No_Answer", " BUSY "]}, "retry")
    assert policy.on == frozenset({"no-answer", "busy"})


def test_fractional_delays_and_whole_float_counts_are_accepted() -> None:
    policy = parse_retry({"max_attempts": 4.0, "delay_minutes": 0.5}, "retry")
    assert policy.max_attempts == 4
    assert isinstance(policy.max_attempts, int)
    assert policy.delay_minutes == 0.5


@pytest.mark.parametrize(
    ("legacy", "delay"),
    [
        ({"wait": 600, "voicemail_action": "leave_message", "voicemail_message": "Hi!"}, 10),
        ({"wait": 90}, 1.5),
        ({"wait": 0, "voicemail_action": "hangup"}, 0),
    ],
)
def test_the_hosted_products_shape_means_one_retry_on_voicemail(
    legacy: dict[str, object], delay: float
) -> None:
    assert parse_retry(legacy, "retry") == RetryPolicy(2, delay, frozenset({"voicemail"}))


@pytest.mark.parametrize(
    ("outcome", "why"),
    [
        ("declined", "a refusal is never retried"),
        ("canceled", "stopped on purpose"),
        ("completed", "reached the callee"),
    ],
)
def test_outcomes_that_are_never_retried_are_explained(outcome: str, why: str) -> None:
    errors = errors_of({"max_attempts": 3, "on": ["busy", outcome]})
    assert list(errors) == ["call_data[2].retry.on[1]"]
    assert f"cannot retry on '{outcome}'" in errors["call_data[2].retry.on[1]"]
    assert why in errors["call_data[2].retry.on[1]"]


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"max_attempts": 0}, "max_attempts", "0 is out of range: use a whole number from 1 to 10"),
        ({"max_attempts": 11}, "max_attempts", "out of range"),
        ({"max_attempts": 10**400}, "max_attempts", "out of range"),
        ({"max_attempts": 2.5}, "max_attempts", "is not a whole number"),
        ({"max_attempts": True}, "max_attempts", "must be a whole number from 1 to 10"),
        ({"max_attempts": "3"}, "max_attempts", "must be a whole number"),
        ({"max_attempts": float("nan")}, "max_attempts", "must be a whole number"),
        ({"delay_minutes": 5}, "max_attempts", "is required"),
        ({"max_attempts": 2, "delay_minutes": -1}, "delay_minutes", "from 0 to 10080"),
        ({"max_attempts": 2, "delay_minutes": 10081}, "delay_minutes", "out of range"),
        ({"max_attempts": 2, "on": "busy"}, "on", "must be an array"),
        ({"max_attempts": 2, "on": ["engaged"]}, "on[0]", "'engaged' is not an outcome"),
        ({"max_attempts": 2, "on": [None]}, "on[0]", "None is not an outcome"),
        ({"max_attempts": 2, "every": 5}, "every", "'every' is not a retry setting"),
        ({"wait": -5}, "wait", "out of range"),
        ({"wait": "10s"}, "wait", "must be a number"),
        ({"voicemail_action": "hangup"}, "wait", "is required"),
        ({"wait": 10, "voicemail_action": "scream"}, "voicemail_action", "hangup, leave_message"),
        ({"wait": 10, "voicemail_message": 5}, "voicemail_message", "must be a string"),
    ],
)
def test_parse_rejects_bad_values_with_the_field_path(
    value: dict[str, object], field: str, message: str
) -> None:
    errors = errors_of(value)
    assert f"call_data[2].retry.{field}" in errors, errors
    assert message in errors[f"call_data[2].retry.{field}"]


def test_parse_reports_every_problem_at_once() -> None:
    errors = errors_of({"max_attempts": 0, "delay_minutes": "soon", "on": ["declined", "x"]})
    assert set(errors) == {
        "call_data[2].retry.max_attempts",
        "call_data[2].retry.delay_minutes",
        "call_data[2].retry.on[0]",
        "call_data[2].retry.on[1]",
    }


def test_parse_rejects_mixing_the_two_shapes() -> None:
    errors = errors_of({"max_attempts": 2, "wait": 60})
    assert "mixes max_attempts with wait" in errors["call_data[2].retry"]


@pytest.mark.parametrize("value", [None, 3, "3", [3]])
def test_parse_rejects_a_value_that_is_not_an_object(value: object) -> None:
    assert "must be an object" in errors_of(value)["call_data[2].retry"]


def test_the_policy_itself_refuses_outcomes_that_are_never_retried() -> None:
    with pytest.raises(ValueError, match="cannot retry on"):
        RetryPolicy(3, 0, frozenset({"declined"}))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(0)
    with pytest.raises(ValueError, match="delay_minutes"):
        RetryPolicy(2, -1)


POLICY = RetryPolicy(3, 30, frozenset({"busy", "no-answer"}))


@pytest.mark.parametrize(
    ("outcome", "attempt", "expected"),
    [
        ("busy", 1, timedelta(minutes=30)),
        ("no-answer", 2, timedelta(minutes=30)),
        ("no-answer", 3, None),
        ("voicemail", 1, None),
        ("failed", 1, None),
        ("completed", 1, None),
        ("declined", 1, None),
    ],
)
def test_retry_delay_follows_the_policy(
    outcome: str, attempt: int, expected: timedelta | None
) -> None:
    assert retry_delay(POLICY, outcome, attempt) == expected


def test_an_opt_out_is_never_retried() -> None:
    assert retry_delay(POLICY, "busy", 1, opted_out=True) is None


def test_legacy_policy_retries_voicemail_once() -> None:
    policy = parse_retry({"wait": 120}, "retry")
    assert retry_delay(policy, "voicemail", 1) == timedelta(minutes=2)
    assert retry_delay(policy, "voicemail", 2) is None
    assert retry_delay(policy, "no-answer", 1) is None


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        retry_delay(POLICY, "busy", 0)


POLICIES = st.builds(
    RetryPolicy,
    st.integers(min_value=1, max_value=10),
    st.floats(min_value=0, max_value=10080),
    st.frozensets(st.sampled_from(["no-answer", "busy", "voicemail", "failed"])),
)


@given(policy=POLICIES, outcomes=st.lists(st.sampled_from(OUTCOMES), min_size=12, max_size=12))
def test_a_callee_is_never_rung_more_than_the_policy_allows(
    policy: RetryPolicy, outcomes: list[str]
) -> None:
    attempts = 0
    for outcome in outcomes:
        attempts += 1
        delay = retry_delay(policy, outcome, attempts)
        if delay is None:
            break
        assert outcome in policy.on
        assert delay == timedelta(minutes=policy.delay_minutes)
    assert attempts <= policy.max_attempts
    refused = [i for i, outcome in enumerate(outcomes) if outcome in ("declined", "completed")]
    if refused:
        assert attempts <= refused[0] + 1


@given(policy=POLICIES, outcome=st.sampled_from(OUTCOMES), attempt=st.integers(1, 12))
def test_an_opt_out_ends_every_policy(policy: RetryPolicy, outcome: str, attempt: int) -> None:
    assert retry_delay(policy, outcome, attempt, opted_out=True) is None
