"""The rules of calling people, as pure functions with no I/O.

Everything the API, the dispatcher and the dashboard must agree on about a call
lives here, free of databases, clocks and networks so it can be tested
exhaustively: reading phone numbers into E.164 and finding the callee's time
zone (`phones`), filling prompt placeholders from a row (`templating`), the
hours a callee may be rung (`windows`), when to try again (`retry`), and the
field-by-field validation errors they all report (`errors`).

A call's Send Call fields have one way in: their typed model, limits, defaults,
legacy aliases and checks (`call_fields`), the shape of a user-supplied URL
(`urls`), the requests of `tools` and `dynamic_data` (`tools`), what the agent
makes of the stored fields (`conversation`), and which accepted fields have no
effect in a deployment (`capabilities`). The API validates with these and the
agent acts on what they parse; neither re-parses the other's way.
"""

from .errors import FieldError, InvalidInput
from .phones import PhoneNumberError, normalize_phone, timezone_for_number
from .retry import NO_RETRY, RETRYABLE_OUTCOMES, RetryPolicy, parse_retry, retry_delay
from .templating import MissingVariables, placeholders, render
from .windows import (
    DEFAULT_WINDOW,
    UNRESTRICTED,
    CallingWindow,
    closes_at,
    is_open,
    next_open,
    parse_window,
)

__all__ = [
    "DEFAULT_WINDOW",
    "NO_RETRY",
    "RETRYABLE_OUTCOMES",
    "UNRESTRICTED",
    "CallingWindow",
    "FieldError",
    "InvalidInput",
    "MissingVariables",
    "PhoneNumberError",
    "RetryPolicy",
    "closes_at",
    "is_open",
    "next_open",
    "normalize_phone",
    "parse_retry",
    "parse_window",
    "placeholders",
    "render",
    "retry_delay",
    "timezone_for_number",
]
