"""Validation errors of the domain layer, shaped like the API's error envelope.

A request is validated field by field, and every problem found is reported at
once, so a user can fix a whole batch in one pass. Each problem is a
`FieldError`: a path into the request body (`call_data[3].phone_number`,
`calling_window.start`) and one sentence saying what is wrong and what to do.
The API layer turns `InvalidInput.errors` into the `errors` array of a 4xx
response. The whole exception tree of the domain package is:

    ValueError
    ├── InvalidInput        (errors.py)      one or more FieldErrors
    ├── PhoneNumberError    (phones.py)      one number, with the `reason`
    └── MissingVariables    (templating.py)  placeholders a row does not fill

Every one of them is a `ValueError`, so code that only needs to know "the
input was bad" can catch that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FieldError", "InvalidInput"]


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a request.

    `field` is a path into the request body, such as `call_data[3].phone_number`;
    `message` is one sentence a person can act on: what is wrong and what to do.
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidInput(ValueError):
    """A request, or part of one, failed validation; `errors` says where and why."""

    errors: list[FieldError]

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = list(errors)
        # args holds the list itself so that pickling (used by process pools and
        # some task queues) rebuilds an equal exception.
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "; ".join(str(error) for error in self.errors) or "invalid input"
