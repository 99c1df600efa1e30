"""Phone numbers: turn what users type into E.164, and find the callee's time zone.

Users paste numbers in every shape (`(415) 555-0123`, `415.555.0123`,
`+44 7911 123456`, `0044 7911 123456`, or a bare JSON integer), so
`normalize_phone` drops the usual punctuation, reads a number without a country
code as North American (+1), and checks the result with `phonenumbers` (the port
of Google's libphonenumber). Anything it rejects comes back as a
`PhoneNumberError` whose `reason` says what is wrong and how to write the number.
One deliberate exception: the fictional range NPA-555-0100..0199 is accepted for
every area code in use, because the phone simulator and the docs use those
numbers, and libphonenumber rejects them for the Caribbean members of the NANP.
`timezones_for_number` gives every IANA zone the callee may be in, which the
calling-window logic needs: one for most numbers, several for an area code that
straddles a zone line, the 50 US states' zones for a toll-free or other
non-geographic North American number, and every zone of the country for a
country-wide number. `timezone_for_number` is the zone when there is exactly one.
"""

from __future__ import annotations

import collections
import functools

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, ValidationResult
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.timezone import (
    UNKNOWN_TIMEZONE,
    time_zones_for_geographical_number,
    time_zones_for_number,
)
from phonenumbers.tzdata import TIMEZONE_DATA

__all__ = [
    "US_ZONES",
    "PhoneNumberError",
    "area_of",
    "country_of",
    "is_fictional_number",
    "state_of",
    "normalize_phone",
    "timezone_for_number",
    "timezones_for_number",
]

US_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
)
"""Where a toll-free or other non-geographic North American callee may be: the zones
of the 50 US states, Eastern to Hawaii. A call to such a number goes only while
the window is open in all of them (a 09:00-20:00 window: about 14:00-20:00 Eastern)."""

_EXAMPLE = "+14155550123"
_HOW_TO_WRITE = f"write it in E.164 form like {_EXAMPLE}"
_NANP = "the North American Numbering Plan"
_E164_MAX_DIGITS = 15
_ERROR_ECHO_LIMIT = 40

# Characters people use to group digits: ASCII space, dash, dot and parentheses,
# plus the Unicode dashes and spaces that word processors and spreadsheets
# substitute for them when a list is copied out of a document.
_SEPARATORS = frozenset(" -.()\t\u00a0\u2007\u202f\u2010\u2011\u2012\u2013\u2014\u2212")
_DIGITS = frozenset("0123456789")


class PhoneNumberError(ValueError):
    """A phone number that cannot be dialled; `reason` says why and how to write it."""

    reason: str

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def normalize_phone(raw: str | int) -> str:
    """Return `raw` as an E.164 string such as `+14155550123`.

    Spaces, dashes, dots and parentheses are dropped. A leading `+`, `00` or
    `011` introduces a country code; without one the number is read as North
    American: 10 digits, or 11 digits starting with 1. JSON integers are
    accepted; booleans, floats and anything else are not. Raises
    `PhoneNumberError` when the input is not a valid, dialable number.
    """
    text = _as_text(raw)
    digits, international = _digits_of(text)
    if not international:
        if digits.startswith("011"):
            digits, international = digits[3:], True
        elif digits.startswith("00"):
            digits, international = digits[2:], True
    nanp = _nanp_digits(digits, international)
    prefix = _nanp_prefix(nanp) if nanp is not None else None
    if prefix is not None and prefix in _VALID_NANP_PREFIXES:
        return "+1" + str(nanp)
    result = _check_international(text, digits) if international else _check_national(text, digits)
    if prefix is not None and result == "+1" + str(nanp):
        _VALID_NANP_PREFIXES.add(prefix)
    return result


def _nanp_prefix(nanp: str) -> str | None:
    """The digits that decide validity: area code and exchange, or, in the 555
    exchange, area code and the fictional 555-01 block (other 555 lines: None)."""
    if nanp[3:6] != "555":
        return nanp[:6]
    if nanp[6:8] == "01":
        return nanp[:8]
    return None


# libphonenumber decides whether a North American number is valid from its area
# code and exchange (the first six digits; the last four are free), and parsing
# costs ~50 us a number. A 100,000-row batch repeats exchanges a lot, so an
# exchange that validated once is remembered. Only successes are remembered:
# every rejection goes through the full check and its precise message.
_VALID_NANP_PREFIXES: set[str] = set()


def _nanp_digits(digits: str, international: bool) -> str | None:
    """The 10 national digits if this reads as a North American number, else None."""
    if len(digits) == 11 and digits[0] == "1":
        return digits[1:]
    if len(digits) == 10 and not international:
        return digits
    return None


def timezone_for_number(e164: str) -> str | None:
    """The IANA time zone of the callee of `e164` when it is the only candidate, else None."""
    zones = timezones_for_number(e164)
    return zones[0] if len(zones) == 1 else None


def timezones_for_number(e164: str) -> tuple[str, ...]:
    """Every IANA zone the callee of `e164` may be in; empty when unknown (cached).

    A caller must treat several zones as all possible: a call goes only when its
    window is open in every one of them.
    """
    nanp = e164[2:] if e164.startswith("+1") and len(e164) == 12 else None
    key = _nanp_prefix(nanp) if nanp is not None else None
    if key is not None:
        # A North American zone depends on the area code and exchange only (the
        # 555 exchange is special: only its fictional 01XX range is valid).
        if key not in _NANP_ZONES:
            _NANP_ZONES[key] = _timezones_for_number(e164)
        return _NANP_ZONES[key]
    return _timezones_for_number(e164)


def is_fictional_number(e164: str) -> bool:
    """True for the North American fictional range NPA-555-0100..0199 (the simulator's)."""
    return e164.startswith("+1") and len(e164) == 12 and _is_fictional_nanp_digits(e164[2:])


_NANP_ZONES: dict[str, tuple[str, ...]] = {}


def area_of(e164: str) -> str | None:
    """The North American area code of `e164` (`"212"`), or None outside +1."""
    return e164[2:5] if e164.startswith("+1") and len(e164) == 12 else None


def country_of(e164: str) -> str | None:
    """The ISO region of `e164` (`"US"`, `"CA"`, `"GB"`), or None when unknown (cached:
    by area code in North America, where the area code decides it)."""
    area = area_of(e164)
    return _country_of(e164[:5] + "2345678" if area is not None else e164)


@functools.lru_cache(maxsize=65536)
def _country_of(e164: str) -> str | None:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except NumberParseException:
        return None
    return region if region and region != "ZZ" else None


def state_of(e164: str) -> str | None:
    """The US state or Canadian province (two letters) of a North American number's
    area code, or None (toll-free, unknown, outside +1)."""
    area = area_of(e164)
    return _area_states().get(area) if area is not None else None


@functools.cache
def _area_states() -> dict[str, str]:
    """Each area code's state, read once from libphonenumber's geocoding data.

    It describes an area code by its state ("California") or by a city in it
    ("New York, NY"), mostly at the area code itself, sometimes only exchange by
    exchange (310): then the state most of its exchanges name.
    """
    votes: dict[str, collections.Counter[str]] = {}
    exact: dict[str, str] = {}
    for prefix, entry in GEOCODE_DATA.items():
        if not prefix.startswith("1") or len(prefix) < 4:
            continue
        code = _state_code(entry.get("en", "") if isinstance(entry, dict) else "")
        if code is None:
            continue
        if len(prefix) == 4:
            exact[prefix[1:]] = code
        else:
            votes.setdefault(prefix[1:4], collections.Counter())[code] += 1
    states = {area: counter.most_common(1)[0][0] for area, counter in votes.items()}
    states.update(exact)
    return states


def _state_code(name: str) -> str | None:
    if ", " in name:
        code = name.rsplit(", ", 1)[1]
        return code if len(code) == 2 else None
    return _STATE_CODES.get(name)


_STATE_CODES = {
    "Alabama": "AL",
    "Alaska": "AK",
    "Arizona": "AZ",
    "Arkansas": "AR",
    "California": "CA",
    "Colorado": "CO",
    "Connecticut": "CT",
    "Delaware": "DE",
    "Washington D.C.": "DC",
    "Florida": "FL",
    "Georgia": "GA",
    "Hawaii": "HI",
    "Idaho": "ID",
    "Illinois": "IL",
    "Indiana": "IN",
    "Iowa": "IA",
    "Kansas": "KS",
    "Kentucky": "KY",
    "Louisiana": "LA",
    "Maine": "ME",
    "Maryland": "MD",
    "Massachusetts": "MA",
    "Michigan": "MI",
    "Minnesota": "MN",
    "Mississippi": "MS",
    "Missouri": "MO",
    "Montana": "MT",
    "Nebraska": "NE",
    "Nevada": "NV",
    "New Hampshire": "NH",
    "New Jersey": "NJ",
    "New Mexico": "NM",
    "New York": "NY",
    "North Carolina": "NC",
    "North Dakota": "ND",
    "Ohio": "OH",
    "Oklahoma": "OK",
    "Oregon": "OR",
    "Pennsylvania": "PA",
    "Rhode Island": "RI",
    "South Carolina": "SC",
    "South Dakota": "SD",
    "Tennessee": "TN",
    "Texas": "TX",
    "Utah": "UT",
    "Vermont": "VT",
    "Virginia": "VA",
    "Washington": "WA",
    "West Virginia": "WV",
    "Wisconsin": "WI",
    "Wyoming": "WY",
    "Puerto Rico": "PR",
    "Alberta": "AB",
    "British Columbia": "BC",
    "Manitoba": "MB",
    "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL",
    "Nova Scotia": "NS",
    "Ontario": "ON",
    "Prince Edward Island": "PE",
    "Quebec": "QC",
    "Saskatchewan": "SK",
    # As the data spells them.
    "Washington State": "WA",
    "British Colombia": "BC",
    "Nova Scotia/Prince Edward Island": "NS",
    "Northwest Territories/Nunavut/Yukon": "NT",
}
"""US states and Canadian provinces as libphonenumber names them, to their codes."""


def _timezones_for_number(e164: str) -> tuple[str, ...]:
    """Every IANA zone of the callee of `e164`, uncached; empty when unknown.

    A North American number with a geographic area code gives its area code's
    zones (`+12125550123` -> `America/New_York`; parts of 208 are in Boise's and
    Los Angeles's). Any other North American number (toll-free, say) gets
    `US_ZONES`, never the whole +1 list, which starts at America/Adak. Elsewhere a
    country-wide number gets every zone of its country.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return ()
    if _has_geographic_area_code(number) and (
        phonenumbers.is_valid_number(number) or _is_fictional_nanp(number)
    ):
        # In North America every number, mobile or not, belongs to its area code,
        # but time_zones_for_number() treats mobiles outside the US and Canada
        # (876 in Jamaica, say) as country-wide and answers with the whole +1
        # list, and gives up on the fictional numbers it calls invalid. The prefix
        # lookup underneath it knows the area code's zone in both cases.
        zones = time_zones_for_geographical_number(number)
    elif not phonenumbers.is_valid_number(number):
        return ()
    elif number.country_code == 1:
        return US_ZONES
    else:
        zones = time_zones_for_number(number)
    return tuple(sorted(z for z in zones if z != UNKNOWN_TIMEZONE))


def _as_text(raw: object) -> str:
    # bool is a subclass of int, so it has to be ruled out first.
    if isinstance(raw, bool):
        raise PhoneNumberError(
            f"{str(raw).lower()} is a boolean, not a phone number; {_HOW_TO_WRITE}"
        )
    if isinstance(raw, int):
        if raw < 0:
            raise PhoneNumberError(
                f"{raw} is a negative number, not a phone number; {_HOW_TO_WRITE}"
            )
        return str(raw)
    if isinstance(raw, float):
        raise PhoneNumberError(
            f"{raw!r} is a decimal number, which can silently lose digits; "
            f"send the phone number as a string in E.164 form like {_EXAMPLE}"
        )
    if not isinstance(raw, str):
        raise PhoneNumberError(
            f"a phone number must be a string or an integer, not {_json_type(raw)}; {_HOW_TO_WRITE}"
        )
    return raw


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _echo(text: str) -> str:
    """Quote the user's input for an error message, cut short if it is huge."""
    if len(text) > _ERROR_ECHO_LIMIT:
        text = text[: _ERROR_ECHO_LIMIT - 1] + "…"
    return repr(text)


def _fail(text: str, detail: str, advice: str = _HOW_TO_WRITE) -> PhoneNumberError:
    return PhoneNumberError(f"{_echo(text)} is not a valid phone number: {detail}; {advice}")


def _digits_of(text: str) -> tuple[str, bool]:
    """Return the ASCII digits of `text` and whether it began with `+`."""
    stripped = text.strip()
    if not stripped:
        raise PhoneNumberError(f"the phone number is empty; {_HOW_TO_WRITE}")
    international = stripped.startswith("+")
    body = stripped[1:] if international else stripped
    digits: list[str] = []
    for char in body:
        if char in _DIGITS:
            digits.append(char)
        elif char in _SEPARATORS or char.isspace():
            continue
        elif char == "+":
            raise _fail(text, "a '+' may only come first, before the country code")
        elif char.isalpha():
            raise _fail(
                text,
                "it contains letters",
                "write every digit (letters on the keypad are not accepted), "
                f"in E.164 form like {_EXAMPLE}",
            )
        else:
            raise _fail(
                text,
                f"it contains {char!r}, which is not a digit or a separator",
                "use only digits, spaces, dashes, dots, parentheses and a leading +, "
                f"like {_EXAMPLE}",
            )
    if not digits:
        raise _fail(text, "it has no digits")
    return "".join(digits), international


def _check_international(text: str, digits: str) -> str:
    if len(digits) > _E164_MAX_DIGITS:
        raise _fail(
            text,
            f"it has {len(digits)} digits after the country prefix, "
            f"and an international number has at most {_E164_MAX_DIGITS}",
        )
    try:
        number = phonenumbers.parse("+" + digits, None)
    except NumberParseException as exc:
        raise _fail(text, _parse_problem(exc, digits)) from None
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if number.country_code == 1:
        return _check_nanp(text, digits[1:])
    raise _fail(text, _international_problem(number))


def _check_national(text: str, digits: str) -> str:
    if len(digits) == 10:
        return _check_nanp(text, digits)
    if len(digits) == 11 and digits.startswith("1"):
        return _check_nanp(text, digits[1:])
    advice = (
        "a number without a country code is read as North American and needs 10 digits "
        f"(area code and number); write other numbers with + and the country code, "
        f"like {_EXAMPLE} or +447911123456"
    )
    if len(digits) < 10:
        raise _fail(text, f"it is too short ({len(digits)} digits)", advice)
    if _is_valid_e164("+" + digits):
        advice = f"if you meant the international number +{digits}, write it with the leading +"
    raise _fail(text, f"it is too long for a North American number ({len(digits)} digits)", advice)


def _check_nanp(text: str, national: str) -> str:
    """Validate the 10 digits after +1 and return the E.164 form."""
    if len(national) != 10:
        size = "short" if len(national) < 10 else "long"
        raise _fail(
            text,
            f"a number with country code +1 needs 10 digits after it, this one is too {size} "
            f"({len(national)} digits)",
        )
    e164 = "+1" + national
    if _is_valid_e164(e164) or _is_fictional_nanp_digits(national):
        return e164
    npa, exchange = national[:3], national[3:6]
    if npa[0] in "01":
        detail = f"area code {npa} does not exist in {_NANP} (area codes start with 2-9)"
    elif npa[1:] == "11":
        detail = f"{npa} is a three-digit service code, not an area code"
    elif exchange[0] in "01":
        detail = (
            f"the three digits after area code {npa} cannot start with {exchange[0]} "
            f"(they are {exchange})"
        )
    elif npa in _geographic_area_codes():
        detail = f"{npa}-{exchange}-{national[6:]} is not an assigned number in area code {npa}"
    else:
        detail = f"area code {npa} is not in use in {_NANP}"
    raise _fail(text, detail)


def _is_valid_e164(e164: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(e164, None))
    except NumberParseException:
        return False


def _parse_problem(exc: NumberParseException, digits: str) -> str:
    if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        return f"no country has a calling code at the start of +{digits}"
    if exc.error_type == NumberParseException.TOO_LONG:
        return "it is too long"
    return "it is too short"


def _international_problem(number: PhoneNumber) -> str:
    country = phonenumbers.region_code_for_country_code(number.country_code or 0)
    where = f"country code +{number.country_code} ({country})"
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.INVALID_COUNTRY_CODE:
        return f"+{number.country_code} is not a country calling code"
    if reason in (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        return f"it is too short for a number with {where}"
    if reason == ValidationResult.TOO_LONG:
        return f"it is too long for a number with {where}"
    if reason == ValidationResult.INVALID_LENGTH:
        return f"it has the wrong number of digits for a number with {where}"
    return f"it is not a number in use for {where}"


@functools.cache
def _geographic_area_codes() -> frozenset[str]:
    """Every NANP area code that libphonenumber maps to a place (and so a time zone).

    Built from the timezone prefix table rather than from a list of our own, so
    it follows the library's data when new area codes open.
    """
    return frozenset(
        prefix[1:4] for prefix in TIMEZONE_DATA if prefix.startswith("1") and len(prefix) >= 4
    )


def _is_fictional_nanp_digits(national: str) -> bool:
    """True for NPA-555-0100..0199 with a real area code, the range reserved for fiction."""
    return (
        len(national) == 10
        and national[3:8] == "55501"
        and national[:3] in _geographic_area_codes()
    )


def _has_geographic_area_code(number: PhoneNumber) -> bool:
    if number.country_code != 1 or number.national_number is None:
        return False
    return f"{number.national_number:010d}"[:3] in _geographic_area_codes()


def _is_fictional_nanp(number: PhoneNumber) -> bool:
    if number.country_code != 1 or number.national_number is None:
        return False
    return _is_fictional_nanp_digits(f"{number.national_number:010d}")
