"""Tests for reading phone numbers into E.164 and finding the callee's time zone."""

from __future__ import annotations

import re
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callfleet.domain.phones import (
    US_ZONES,
    PhoneNumberError,
    normalize_phone,
    timezone_for_number,
    timezones_for_number,
)

E164 = re.compile(r"\+[1-9]\d{1,14}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550123", "+14155550123"),
        ("4155550123", "+14155550123"),
        ("14155550123", "+14155550123"),
        ("(415) 555-0123", "+14155550123"),
        ("415.555.0123", "+14155550123"),
        ("1-415-555-0123", "+14155550123"),
        ("  +1 (415) 555 0123  ", "+14155550123"),
        ("415\u2013555\u20130123", "+14155550123"),
        ("415\u00a0555\u00a00123", "+14155550123"),
        ("+1 212 555 1234", "+12125551234"),
        ("+44 7911 123456", "+447911123456"),
        ("0044 7911 123456", "+447911123456"),
        ("011 44 7911 123456", "+447911123456"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+39 06 6982 0000", "+390669820000"),
        (14155550123, "+14155550123"),
        (4155550123, "+14155550123"),
    ],
)
def test_accepts_the_usual_ways_of_writing_a_number(raw: str | int, expected: str) -> None:
    assert normalize_phone(raw) == expected


# US, Canadian and Caribbean area codes: libphonenumber accepts 555-01XX for the
# first two but not for most Caribbean members of the NANP, which we must. A table,
# nine to a line (fmt: skip): one a line would run to 27 lines.
FICTIONAL_AREA_CODES = [
    "201", "212", "305", "415", "808", "907", "416", "604", "514",
    "242", "246", "264", "268", "284", "345", "441", "473", "649",
    "664", "684", "721", "758", "767", "868", "869", "876", "787",
]  # fmt: skip


@pytest.mark.parametrize("area_code", FICTIONAL_AREA_CODES)
@pytest.mark.parametrize("line", ["0100", "0123", "0199"])
def test_accepts_the_fictional_555_01xx_range_for_every_area_code(
    area_code: str, line: str
) -> None:
    assert normalize_phone(f"{area_code}-555-{line}") == f"+1{area_code}555{line}"
    assert normalize_phone(f"+1{area_code}555{line}") == f"+1{area_code}555{line}"


@pytest.mark.parametrize("raw", ["+12425550099", "+12425550200", "+12425559999"])
def test_the_fictional_exception_is_only_the_0100_to_0199_block(raw: str) -> None:
    with pytest.raises(PhoneNumberError, match="not an assigned number in area code 242"):
        normalize_phone(raw)


def test_the_fictional_exception_needs_an_area_code_in_use() -> None:
    with pytest.raises(PhoneNumberError, match="area code 999 is not in use"):
        normalize_phone("999-555-0123")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "the phone number is empty"),
        ("   ", "the phone number is empty"),
        ("+", "it has no digits"),
        ("--", "it has no digits"),
        ("1-800-FLOWERS", "it contains letters"),
        ("415 555 0123 ext 4", "it contains letters"),
        ("415/555/0123", "it contains '/'"),
        ("415+5550123", "a '\\+' may only come first"),
        ("555-0123", r"it is too short \(7 digits\)"),
        ("4155550123456", r"it is too long for a North American number \(13 digits\)"),
        ("24155550123", r"too long for a North American number \(11 digits\)"),
        ("+1415555012", "needs 10 digits after it, this one is too short"),
        ("+1415555012345", "needs 10 digits after it, this one is too long"),
        ("+4155501234567890", "at most 15"),
        ("1234567890", "area code 123 does not exist in the North American Numbering Plan"),
        ("0234567890", "area code 023 does not exist"),
        ("911-555-0123", "911 is a three-digit service code"),
        ("212-055-1234", "cannot start with 0"),
        ("+999123456", r"no country has a calling code at the start of \+999123456"),
        ("+447911", r"too short for a number with country code \+44 \(GB\)"),
        ("+44791112345", r"not a number in use for country code \+44"),
    ],
)
def test_rejects_with_a_reason_that_names_the_problem(raw: str, reason: str) -> None:
    with pytest.raises(PhoneNumberError, match=reason) as caught:
        normalize_phone(raw)
    assert caught.value.reason == str(caught.value)
    # Every reason ends by showing a correctly written number.
    assert re.search(r"\+\d{10,}", caught.value.reason)


def test_reason_quotes_the_input_and_says_how_to_write_it() -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalize_phone("1234567890")
    assert caught.value.reason == (
        "'1234567890' is not a valid phone number: area code 123 does not exist in the "
        "North American Numbering Plan (area codes start with 2-9); "
        "write it in E.164 form like +14155550123"
    )


def test_reason_suggests_the_plus_form_when_digits_look_international() -> None:
    with pytest.raises(PhoneNumberError, match=r"you meant the international number \+447911"):
        normalize_phone("447911123456")


def test_reason_cuts_a_huge_input_short() -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalize_phone("x" * 10_000)
    assert len(caught.value.reason) < 300


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (True, "true is a boolean"),
        (False, "false is a boolean"),
        (4155550123.0, "is a decimal number"),
        (-4155550123, "is a negative number"),
        (None, "not null"),
        (["4155550123"], "not an array"),
        ({"number": "4155550123"}, "not an object"),
    ],
)
def test_rejects_values_that_are_not_strings_or_integers(raw: object, reason: str) -> None:
    with pytest.raises(PhoneNumberError, match=reason):
        normalize_phone(raw)  # type: ignore[arg-type]


AREA_CODES = st.sampled_from(["212", "415", "617", "713", "416", "604", "242", "876"])
SEPARATORS = st.sampled_from(["", " ", "-", ".", "  ", " - "])
PREFIXES = st.sampled_from(["", "1", "1 ", "1-", "+1", "+1 ", "+1-", "001 ", "011 1 ", "+ 1 "])


@given(
    area=AREA_CODES,
    line=st.integers(min_value=100, max_value=199),
    prefix=PREFIXES,
    first=SEPARATORS,
    second=SEPARATORS,
    parenthesised=st.booleans(),
)
def test_any_formatting_of_a_number_gives_the_same_e164(
    area: str, line: int, prefix: str, first: str, second: str, parenthesised: bool
) -> None:
    area_part = f"({area})" if parenthesised else area
    raw = f"{prefix}{area_part}{first}555{second}{line:04d}"
    assert normalize_phone(raw) == f"+1{area}555{line:04d}"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_any_text_gives_e164_or_a_phone_number_error(raw: str) -> None:
    try:
        result = normalize_phone(raw)
    except PhoneNumberError as error:
        assert error.reason
        return
    assert E164.fullmatch(result)
    assert normalize_phone(result) == result


@given(st.text(alphabet="0123456789 +-.()", max_size=20))
def test_digit_soup_gives_e164_or_a_phone_number_error(raw: str) -> None:
    try:
        result = normalize_phone(raw)
    except PhoneNumberError:
        return
    assert E164.fullmatch(result)
    assert normalize_phone(result) == result
    assert result[1:].endswith(re.sub(r"\D", "", raw)[-7:])


@given(st.integers(min_value=0, max_value=10**20))
def test_an_integer_behaves_like_its_decimal_string(raw: int) -> None:
    try:
        expected: str | None = normalize_phone(str(raw))
    except PhoneNumberError:
        expected = None
    try:
        actual: str | None = normalize_phone(raw)
    except PhoneNumberError:
        actual = None
    assert actual == expected


@pytest.mark.parametrize(
    ("number", "zone"),
    [
        ("+12125550123", "America/New_York"),
        ("+14155550123", "America/Los_Angeles"),
        ("+14155550199", "America/Los_Angeles"),
        ("+13125550100", "America/Chicago"),
        ("+14165550123", "America/Toronto"),
        ("+18085550123", "Pacific/Honolulu"),
        ("+12425550150", "America/Nassau"),
        ("+18765550150", "America/Jamaica"),
        ("+18762345678", "America/Jamaica"),
        ("+33612345678", "Europe/Paris"),
        ("+81312345678", "Asia/Tokyo"),
    ],
)
def test_timezone_comes_from_the_area_code_or_country(number: str, zone: str) -> None:
    assert timezone_for_number(number) == zone


@pytest.mark.parametrize(
    "number", ["+19995550123", "+12425550250", "+1212", "not a number", "", "+999123456"]
)
def test_timezone_is_none_when_unknown(number: str) -> None:
    assert timezone_for_number(number) is None


def test_a_toll_free_number_may_be_anywhere_in_the_fifty_states() -> None:
    # It used to resolve to the first +1 zone alphabetically, America/Adak.
    assert timezones_for_number("+18005550123") == US_ZONES
    assert timezones_for_number("+18885550150") == US_ZONES
    assert timezone_for_number("+18005550123") is None


def test_an_area_code_across_a_zone_line_gives_both_zones() -> None:
    assert timezones_for_number("+12085550100") == ("America/Boise", "America/Los_Angeles")
    assert timezone_for_number("+12085550100") is None


def test_a_country_wide_number_gives_every_zone_of_its_country() -> None:
    zones = timezones_for_number("+447911123456")
    assert "Europe/London" in zones
    assert len(zones) > 1
    assert all(zone in zoneinfo.available_timezones() for zone in zones)


@pytest.mark.parametrize("number", ["+19995550123", "+1212", "not a number", "+999123456"])
def test_no_candidate_zones_when_unknown(number: str) -> None:
    assert timezones_for_number(number) == ()


@given(area=AREA_CODES, line=st.integers(min_value=100, max_value=199))
def test_every_normalized_fictional_number_has_a_time_zone(area: str, line: int) -> None:
    zones = timezones_for_number(normalize_phone(f"{area}555{line:04d}"))
    assert zones
    assert all(zone.startswith(("America/", "Pacific/", "Atlantic/")) for zone in zones)
