"""Tests for the validation error types shared by the domain package."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from callfleet.domain import FieldError, InvalidInput, MissingVariables, PhoneNumberError


def test_invalid_input_joins_every_error_in_its_message() -> None:
    error = InvalidInput(
        [
            FieldError("call_data[3].phone_number", "'12' is too short."),
            FieldError("calling_window.start", "'9' is not a time of day."),
        ]
    )
    assert str(error) == (
        "call_data[3].phone_number: '12' is too short.; "
        "calling_window.start: '9' is not a time of day."
    )
    assert [e.field for e in error.errors] == ["call_data[3].phone_number", "calling_window.start"]


def test_invalid_input_is_a_value_error_and_keeps_its_own_list() -> None:
    source = [FieldError("a", "bad")]
    error = InvalidInput(source)
    source.append(FieldError("b", "also bad"))
    assert isinstance(error, ValueError)
    assert error.errors == [FieldError("a", "bad")]


def test_invalid_input_accepts_any_iterable() -> None:
    error = InvalidInput(FieldError(f"x[{i}]", "bad") for i in range(3))
    assert [e.field for e in error.errors] == ["x[0]", "x[1]", "x[2]"]


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput([FieldError("label", "must be a string.")]),
        PhoneNumberError("'12' is not a valid phone number: it is too short"),
        MissingVariables(["name", "order id"]),
    ],
)
def test_errors_survive_pickling(error: ValueError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_field_error_is_immutable_and_comparable() -> None:
    error = FieldError("from", "is not one of your numbers.")
    assert error == FieldError("from", "is not one of your numbers.")
    assert str(error) == "from: is not one of your numbers."
    with pytest.raises(dataclasses.FrozenInstanceError):
        error.field = "to"  # type: ignore[misc]
