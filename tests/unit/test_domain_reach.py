"""The pure rules of issue 10: the operator's calling hours, windows read in every
candidate zone, and the order a pool offers its numbers in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callfleet.domain.phones import US_ZONES, state_of
from callfleet.domain.pools import PoolNumber, rank_pool
from callfleet.domain.windows import (
    DEFAULT_WINDOW,
    CallingWindow,
    Rule,
    all_open,
    callee_rules,
    is_open,
    narrow,
    next_open_all,
    parse_calling_hours,
    rules_for_call,
)

TCPA = CallingWindow(8 * 60, 21 * 60)


def test_calling_hours_parse_and_off() -> None:
    assert parse_calling_hours("08:00-21:00") == TCPA
    assert parse_calling_hours(" 9:30 - 17:00 ") == CallingWindow(9 * 60 + 30, 17 * 60)
    assert parse_calling_hours("OFF") is None
    for bad in ("21:00-08:00", "08:00", "8-21", "08:00-25:00", ""):
        with pytest.raises(ValueError, match="08:00-21:00"):
            parse_calling_hours(bad)


def test_a_window_is_narrowed_never_widened() -> None:
    assert narrow(CallingWindow(7 * 60, 22 * 60), TCPA) == (TCPA, True)
    assert narrow(DEFAULT_WINDOW, TCPA) == (DEFAULT_WINDOW, False)
    assert narrow(CallingWindow(7 * 60, 22 * 60), None) == (CallingWindow(7 * 60, 22 * 60), False)
    days = CallingWindow(6 * 60, 12 * 60, frozenset({0, 1}))
    assert narrow(days, TCPA) == (CallingWindow(8 * 60, 12 * 60, frozenset({0, 1})), True)
    with pytest.raises(ValueError, match="outside the operator's calling hours"):
        narrow(CallingWindow(21 * 60 + 30, 23 * 60), TCPA)
    # A window in its own zone stays whole; the floor becomes a rule of its own.
    tokyo = CallingWindow(7 * 60, 22 * 60, timezone="Asia/Tokyo")
    assert narrow(tokyo, TCPA) == (tokyo, True)
    rules = callee_rules(tokyo, ("America/New_York",), TCPA)
    assert rules == (Rule(tokyo, "Asia/Tokyo"), Rule(TCPA, "America/New_York"))


def test_a_toll_free_number_waits_for_every_us_zone() -> None:
    rules = rules_for_call(DEFAULT_WINDOW, "+18005550100", None, TCPA)
    assert rules is not None
    assert {rule.zone for rule in rules} == set(US_ZONES)
    # 10:00 in New York is 05:00 in Honolulu; 09:00 there is 19:00 UTC in December.
    ten_in_new_york = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    assert not all_open(rules, ten_in_new_york)
    assert next_open_all(rules, ten_in_new_york) == datetime(2026, 12, 7, 19, 0, tzinfo=UTC)
    # It closes at 20:00 in New York: 01:00 UTC.
    assert all_open(rules, datetime(2026, 12, 8, 0, 59, tzinfo=UTC))
    assert not all_open(rules, datetime(2026, 12, 8, 1, 0, tzinfo=UTC))


def test_a_given_zone_or_a_fictional_number_changes_the_rules() -> None:
    told = rules_for_call(DEFAULT_WINDOW, "+18005550100", "America/Chicago", TCPA)
    assert told == (Rule(DEFAULT_WINDOW, "America/Chicago"),)
    wide = CallingWindow(0, 24 * 60 - 1)
    fictional = rules_for_call(wide, "+12125550101", None, TCPA)
    assert fictional == (Rule(wide, "America/New_York"),)  # no floor for the lab range
    real = rules_for_call(wide, "+12122345678", None, TCPA)
    assert real == (Rule(TCPA, "America/New_York"),)
    assert rules_for_call(DEFAULT_WINDOW, "+999123456", None, TCPA) is None


def test_an_area_code_across_a_zone_line_waits_for_both_sides() -> None:
    rules = rules_for_call(DEFAULT_WINDOW, "+12085550100", None, None)
    assert rules is not None and {r.zone for r in rules} == {"America/Boise", "America/Los_Angeles"}
    # 09:00 in Boise is 08:00 in Los Angeles: it opens at 09:00 Pacific, 17:00 UTC.
    assert next_open_all(rules, datetime(2026, 12, 7, 15, 0, tzinfo=UTC)) == datetime(
        2026, 12, 7, 17, 0, tzinfo=UTC
    )


def test_rules_that_never_meet_give_none() -> None:
    night = CallingWindow(0, 2 * 60)
    rules = (Rule(night, "America/New_York"), Rule(night, "Asia/Tokyo"))
    assert next_open_all(rules, datetime(2026, 12, 7, tzinfo=UTC)) is None


@given(
    hour=st.integers(min_value=0, max_value=24 * 14),
    zones=st.lists(st.sampled_from(US_ZONES), min_size=1, max_size=4, unique=True),
)
def test_the_first_common_opening_is_open_everywhere_and_nothing_earlier_is(
    hour: int, zones: list[str]
) -> None:
    rules = callee_rules(DEFAULT_WINDOW, tuple(zones), TCPA)
    now = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=hour, minutes=7)
    opening = next_open_all(rules, now)
    assert opening is not None
    assert all(is_open(r.window, r.zone, opening) for r in rules)
    # A minute earlier (if after now) some zone is still closed.
    before = opening - timedelta(minutes=1)
    if before >= now:
        assert not all_open(rules, before)


def test_the_state_of_an_area_code() -> None:
    assert state_of("+12125550101") == "NY"  # described by its city, "New York, NY"
    assert state_of("+15185550101") == "NY"  # described by its state, "New York"
    assert state_of("+13105550101") == "CA"  # described exchange by exchange
    assert state_of("+18005550100") is None
    assert state_of("+447911123456") is None


def test_a_pool_offers_the_nearest_unpaused_number_least_recently_used_first() -> None:
    old = datetime(2026, 12, 1, tzinfo=UTC)
    new = old + timedelta(hours=1)
    members = [
        PoolNumber("+12125550150", new),  # NY, 212
        PoolNumber("+15185550150", old),  # NY, 518
        PoolNumber("+14155550150", None, paused=True),  # CA, paused
        PoolNumber("+13125550150", None),  # IL, never used
        PoolNumber("+13125550151", old),  # IL
    ]
    assert rank_pool("+12125550101", members)[0] == "+12125550150"  # same area code
    assert rank_pool("+13155550101", members)[:2] == ["+15185550150", "+12125550150"]
    to_california = rank_pool("+14155550101", members)
    assert "+14155550150" not in to_california  # paused: never offered
    assert to_california[0] == "+13125550150"  # same country, never used first
    assert rank_pool("+447911123456", members)[0] == "+13125550150"  # anywhere: LRU
    assert rank_pool("+12125550101", [PoolNumber("+14155550150", None, True)]) == []
