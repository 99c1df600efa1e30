"""Tests for calling windows read in the callee's local time."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callfleet.domain import InvalidInput
from callfleet.domain.windows import (
    DEFAULT_WINDOW,
    UNRESTRICTED,
    CallingWindow,
    closes_at,
    is_open,
    next_open,
    parse_window,
)

NEW_YORK = "America/New_York"
WEEKDAYS = frozenset(range(5))
ALL_DAYS = frozenset(range(7))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    zone: str,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """An instant given by its wall clock in `zone`, returned in UTC."""
    wall = datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(zone), fold=fold)
    return wall.astimezone(UTC)


def window(start: str, end: str, days: frozenset[int] = ALL_DAYS) -> CallingWindow:
    def minutes(clock: str) -> int:
        hours, mins = clock.split(":")
        return int(hours) * 60 + int(mins)

    return CallingWindow(minutes(start), minutes(end), days, None)


def errors_of(value: object) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        parse_window(value, "calling_window")
    return {error.field: error.message for error in caught.value.errors}


# --- parsing ---------------------------------------------------------------


def test_parse_reads_the_documented_shape() -> None:
    parsed = parse_window(
        {"start": "08:30", "end": "17:45", "days": ["mon", "wed", "fri"], "timezone": "Asia/Tokyo"},
        "calling_window",
    )
    assert parsed == CallingWindow(8 * 60 + 30, 17 * 60 + 45, frozenset({0, 2, 4}), "Asia/Tokyo")


def test_parse_defaults_to_nine_to_eight_every_day_in_the_callee_zone() -> None:
    assert parse_window({}, "w") == DEFAULT_WINDOW
    assert CallingWindow(540, 1200, ALL_DAYS, None) == DEFAULT_WINDOW
    assert parse_window({"start": None, "end": None, "days": None, "timezone": None}, "w") == (
        DEFAULT_WINDOW
    )


def test_parse_accepts_full_and_mixed_case_day_names() -> None:
    parsed = parse_window({"days": ["Monday", "TUE", " sunday ", "Sat", "mon"]}, "w")
    assert parsed.days == frozenset({0, 1, 5, 6})


def test_midnight_to_midnight_every_day_is_unrestricted() -> None:
    parsed = parse_window({"start": "00:00", "end": "24:00"}, "w")
    assert parsed.unrestricted
    assert parsed == UNRESTRICTED
    assert not parse_window({"start": "00:00", "end": "24:00", "days": ["mon"]}, "w").unrestricted
    assert not parse_window({"start": "00:01", "end": "24:00"}, "w").unrestricted
    assert not DEFAULT_WINDOW.unrestricted


def test_to_json_gives_the_api_shape() -> None:
    assert window("09:05", "24:00", frozenset({6, 0, 3})).to_json() == {
        "start": "09:05",
        "end": "24:00",
        "days": ["mon", "thu", "sun"],
        "timezone": None,
    }


@given(
    start=st.integers(min_value=0, max_value=1439),
    length=st.integers(min_value=1, max_value=1440),
    days=st.frozensets(st.integers(min_value=0, max_value=6), min_size=1),
    zone=st.sampled_from([None, "UTC", "Europe/Berlin", "Australia/Lord_Howe"]),
)
def test_to_json_parses_back_to_the_same_window(
    start: int, length: int, days: frozenset[int], zone: str | None
) -> None:
    original = CallingWindow(start, min(start + length, 1440), days, zone)
    assert parse_window(original.to_json(), "w") == original


def test_parse_rejects_a_start_after_the_end_and_suggests_splitting() -> None:
    errors = errors_of({"start": "22:00", "end": "08:00"})
    assert list(errors) == ["calling_window.start"]
    assert "22:00 is not before end 08:00" in errors["calling_window.start"]
    assert "22:00-24:00 and 00:00-08:00" in errors["calling_window.start"]


def test_parse_explains_midnight_as_an_end() -> None:
    errors = errors_of({"start": "09:00", "end": "00:00"})
    assert 'write "24:00"' in errors["calling_window.start"]
    assert "only end a window" in errors_of({"start": "24:00"})["calling_window.start"]


def test_parse_reports_every_problem_with_its_path() -> None:
    errors = errors_of(
        {
            "start": "9am",
            "end": 1700,
            "days": ["mon", "funday", 3],
            "timezone": "Mars/Olympus_Mons",
            "tz": "UTC",
        }
    )
    assert set(errors) == {
        "calling_window.start",
        "calling_window.end",
        "calling_window.days[1]",
        "calling_window.days[2]",
        "calling_window.timezone",
        "calling_window.tz",
    }
    assert "HH:MM" in errors["calling_window.start"]
    assert "as a string" in errors["calling_window.end"]
    assert "'funday' is not a day of the week" in errors["calling_window.days[1]"]
    assert "America/New_York" in errors["calling_window.timezone"]
    assert "'tz' is not a calling window setting" in errors["calling_window.tz"]


@pytest.mark.parametrize("clock", ["25:00", "12:60", "24:01", "1200", "", "12:5", "-1:00"])
def test_parse_rejects_impossible_times(clock: str) -> None:
    assert "not a time of day" in errors_of({"end": clock})["calling_window.end"]


@pytest.mark.parametrize("zone", ["", "utc", "America", "../etc/passwd", "localtime", 5])
def test_parse_rejects_zones_that_are_not_places(zone: object) -> None:
    assert "not an IANA time zone" in errors_of({"timezone": zone})["calling_window.timezone"]


@pytest.mark.parametrize("value", [None, [], "09:00-20:00", 9])
def test_parse_rejects_a_value_that_is_not_an_object(value: object) -> None:
    assert "must be an object" in errors_of(value)["calling_window"]


@pytest.mark.parametrize(("days", "message"), [([], "at least one day"), ("mon", "an array")])
def test_parse_rejects_bad_day_lists(days: object, message: str) -> None:
    assert message in errors_of({"days": days})["calling_window.days"]


def test_constructor_rejects_impossible_windows() -> None:
    with pytest.raises(ValueError, match="start_minute < end_minute"):
        CallingWindow(600, 600, ALL_DAYS, None)
    with pytest.raises(ValueError, match="days"):
        CallingWindow(0, 60, frozenset(), None)
    with pytest.raises(ValueError, match="days"):
        CallingWindow(0, 60, frozenset({7}), None)
    with pytest.raises(ValueError, match="time zone"):
        CallingWindow(0, 60, ALL_DAYS, "Nowhere/Special")


# --- is_open / next_open / closes_at -----------------------------------------


@pytest.mark.parametrize(
    ("wall", "expected"),
    [((8, 59, 59), False), ((9, 0, 0), True), ((19, 59, 59), True), ((20, 0, 0), False)],
)
def test_is_open_reads_the_callee_wall_clock(wall: tuple[int, int, int], expected: bool) -> None:
    now = local(NEW_YORK, 2025, 1, 15, *wall)
    assert is_open(DEFAULT_WINDOW, NEW_YORK, now) is expected


def test_the_window_zone_beats_the_callee_zone_which_beats_utc() -> None:
    now = utc(2025, 1, 15, 15, 0)  # 10:00 in New York, 00:00 next day in Tokyo
    assert is_open(DEFAULT_WINDOW, NEW_YORK, now)
    assert not is_open(DEFAULT_WINDOW, "Asia/Tokyo", now)
    tokyo_window = CallingWindow(540, 1200, ALL_DAYS, "Asia/Tokyo")
    assert not is_open(tokyo_window, NEW_YORK, now)
    assert is_open(DEFAULT_WINDOW, None, now)  # 15:00 UTC
    assert not is_open(DEFAULT_WINDOW, None, utc(2025, 1, 15, 20, 0))


def test_now_must_be_aware() -> None:
    naive = datetime(2025, 1, 15, 12, 0)
    for function in (is_open, next_open, closes_at):
        with pytest.raises(ValueError, match="timezone-aware"):
            function(DEFAULT_WINDOW, NEW_YORK, naive)


def test_an_unknown_zone_is_an_error_not_utc() -> None:
    with pytest.raises(ValueError, match="not an IANA time zone"):
        is_open(DEFAULT_WINDOW, "Etc/Unknown", utc(2025, 1, 15, 12, 0))


def test_next_open_returns_now_when_open() -> None:
    now = local(NEW_YORK, 2025, 1, 15, 12, 34, 56)
    assert next_open(DEFAULT_WINDOW, NEW_YORK, now) is now


def test_next_open_after_hours_is_tomorrow_morning() -> None:
    now = local(NEW_YORK, 2025, 1, 15, 21, 0)
    opens = next_open(DEFAULT_WINDOW, NEW_YORK, now)
    assert opens == local(NEW_YORK, 2025, 1, 16, 9, 0)
    assert opens.tzinfo is UTC


def test_next_open_before_hours_is_this_morning() -> None:
    now = local(NEW_YORK, 2025, 1, 15, 6, 30)
    assert next_open(DEFAULT_WINDOW, NEW_YORK, now) == local(NEW_YORK, 2025, 1, 15, 9, 0)


def test_next_open_skips_days_not_in_the_window() -> None:
    friday_evening = local(NEW_YORK, 2025, 1, 17, 20, 30)
    weekdays = window("09:00", "17:00", WEEKDAYS)
    assert next_open(weekdays, NEW_YORK, friday_evening) == local(NEW_YORK, 2025, 1, 20, 9, 0)
    saturday_noon = local(NEW_YORK, 2025, 1, 18, 12, 0)
    assert not is_open(weekdays, NEW_YORK, saturday_noon)


def test_next_open_at_a_start_inside_a_dst_gap_is_the_end_of_the_gap() -> None:
    # 2024-03-10 in New York: 02:00 EST jumps to 03:00 EDT, so 02:30 never happens.
    early = window("02:30", "04:00")
    now = local(NEW_YORK, 2024, 3, 10, 0, 0)
    assert next_open(early, NEW_YORK, now) == utc(2024, 3, 10, 7, 0)  # 03:00 EDT


def test_a_window_wholly_inside_a_dst_gap_does_not_open_that_day() -> None:
    inside_gap = window("02:00", "02:45", frozenset({6}))  # Sundays only
    now = local(NEW_YORK, 2024, 3, 10, 0, 0)
    assert next_open(inside_gap, NEW_YORK, now) == local(NEW_YORK, 2024, 3, 17, 2, 0)


def test_a_wall_time_repeated_by_fall_back_opens_again() -> None:
    # 2024-11-03 in New York: 02:00 EDT falls back to 01:00 EST.
    late_night = window("01:30", "05:00")
    between = local(NEW_YORK, 2024, 11, 3, 1, 10, fold=1)
    assert not is_open(late_night, NEW_YORK, between)
    assert next_open(late_night, NEW_YORK, between) == local(NEW_YORK, 2024, 11, 3, 1, 30, fold=1)


def test_a_clock_set_back_into_the_window_opens_it() -> None:
    small_hours = window("00:00", "01:30")
    now = local(NEW_YORK, 2024, 11, 3, 1, 40)  # EDT, closed until the clock goes back
    assert next_open(small_hours, NEW_YORK, now) == utc(2024, 11, 3, 6, 0)


def test_a_whole_day_skipped_by_the_zone_is_skipped() -> None:
    # Samoa moved across the date line: Friday 2011-12-30 never happened in Apia.
    fridays = window("09:00", "17:00", frozenset({4}))
    now = local("Pacific/Apia", 2011, 12, 29, 18, 0)
    assert next_open(fridays, "Pacific/Apia", now) == local("Pacific/Apia", 2012, 1, 6, 9, 0)


def test_closes_at_is_none_for_unrestricted_and_now_when_closed() -> None:
    now = utc(2025, 1, 15, 3, 0)
    assert closes_at(UNRESTRICTED, NEW_YORK, now) is None
    assert closes_at(DEFAULT_WINDOW, NEW_YORK, now) == now


def test_closes_at_is_the_end_of_the_day_window() -> None:
    now = local(NEW_YORK, 2025, 1, 15, 12, 0)
    assert closes_at(DEFAULT_WINDOW, NEW_YORK, now) == local(NEW_YORK, 2025, 1, 15, 20, 0)


def test_round_the_clock_weekdays_close_on_saturday() -> None:
    weekdays = window("00:00", "24:00", WEEKDAYS)
    tuesday = local(NEW_YORK, 2025, 1, 14, 3, 0)
    assert closes_at(weekdays, NEW_YORK, tuesday) == local(NEW_YORK, 2025, 1, 18, 0, 0)


def test_closes_at_an_end_inside_a_dst_gap_is_the_jump() -> None:
    night = window("00:00", "02:30")
    now = local(NEW_YORK, 2024, 3, 10, 1, 0)
    assert closes_at(night, NEW_YORK, now) == utc(2024, 3, 10, 7, 0)


def test_a_clock_set_back_before_the_start_closes_the_window() -> None:
    from_quarter_past_one = window("01:15", "05:00")
    now = local(NEW_YORK, 2024, 11, 3, 1, 40)  # EDT
    assert closes_at(from_quarter_past_one, NEW_YORK, now) == utc(2024, 11, 3, 6, 0)


TRICKY_ZONES = [
    None,
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # half-hour DST shift
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight
    "Pacific/Apia",  # skipped a whole day
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "Africa/Casablanca",  # DST suspended for Ramadan
    "America/St_Johns",
]

WINDOWS = st.builds(
    lambda start, length, days: CallingWindow(start, min(start + length, 1440), days, None),
    st.integers(min_value=0, max_value=1439),
    st.integers(min_value=1, max_value=1440),
    st.frozensets(st.integers(min_value=0, max_value=6), min_size=1),
)
INSTANTS = st.datetimes(
    min_value=datetime(1995, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@functools.cache
def offset_changes(zone: str, year: int) -> list[datetime]:
    """Every instant in `year` at which `zone` changes its UTC offset (found by bisection)."""
    place = ZoneInfo(zone)
    changes = []
    low = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    while low < end:
        high = low + 6 * 3600
        before = datetime.fromtimestamp(low, place).utcoffset()
        if datetime.fromtimestamp(high, place).utcoffset() != before:
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, place).utcoffset() == before:
                    low = middle
                else:
                    high = middle
            changes.append(datetime.fromtimestamp(high, UTC))
        low = high
    return changes


@st.composite
def zone_and_instant(draw: st.DrawFn) -> tuple[str | None, datetime]:
    """A zone and an instant, most often within two days of one of the zone's clock changes."""
    zone = draw(st.sampled_from(TRICKY_ZONES))
    if zone is None or draw(st.integers(min_value=0, max_value=3)) == 0:
        return zone, draw(INSTANTS)
    year = (
        2011
        if zone == "Pacific/Apia" and draw(st.booleans())
        else draw(st.integers(min_value=1996, max_value=2034))
    )
    changes = offset_changes(zone, year)
    if not changes:
        return zone, draw(INSTANTS)
    change = draw(st.sampled_from(changes))
    shift = draw(st.integers(min_value=-2 * 86400, max_value=2 * 86400))
    return zone, change + timedelta(seconds=shift)


@settings(max_examples=300, deadline=None)
@given(window=WINDOWS, where=zone_and_instant())
def test_next_open_is_the_first_open_instant(
    window: CallingWindow, where: tuple[str | None, datetime]
) -> None:
    zone, now = where
    opens = next_open(window, zone, now)
    assert opens >= now
    assert is_open(window, zone, opens)
    if opens != now:
        assert opens.utcoffset() == timedelta(0)
        assert not is_open(window, zone, opens - timedelta(seconds=1))
        # Offsets of these zones are whole minutes, so the window can only change
        # state on a minute boundary: one probe per minute covers every instant.
        probe = now
        while probe < opens:
            assert not is_open(window, zone, probe), f"open at {probe}, before {opens}"
            probe += timedelta(minutes=1)


@settings(max_examples=300, deadline=None)
@given(window=WINDOWS, where=zone_and_instant())
def test_closes_at_is_the_first_closed_instant(
    window: CallingWindow, where: tuple[str | None, datetime]
) -> None:
    zone, now = where
    closes = closes_at(window, zone, now)
    if window.unrestricted:
        assert closes is None
        return
    assert closes is not None
    if not is_open(window, zone, now):
        assert closes == now
        return
    assert closes > now
    assert not is_open(window, zone, closes)
    probe = now
    while probe < closes:
        assert is_open(window, zone, probe), f"closed at {probe}, before {closes}"
        probe += timedelta(minutes=1)
