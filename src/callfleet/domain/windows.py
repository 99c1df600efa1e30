"""Calling windows: the hours and days a callee may be rung, in the callee's own time.

A `CallingWindow` is a daily range of wall-clock minutes (`start_minute` up to but
not including `end_minute`) on some days of the week, read in one time zone: the
window's own `timezone` when it has one, else the zone of the callee (derived
from the number, or given per row), else UTC. The window is about the wall clock,
so a start time that does not exist on a spring-forward day opens at the first
instant after the gap, and a wall time repeated on a fall-back day counts both
times. `parse_window` reads the API's `calling_window` object; `is_open`,
`next_open` and `closes_at` answer the dispatcher's questions for an instant in
UTC. They run for every queued call on every scheduling pass, so time zones are
looked up once and cached.

Two rules bound every window. The operator's calling hours (`parse_calling_hours`,
the TCPA's 08:00-21:00 by default) are a floor read in the callee's time: a
tenant's window is intersected with them (`narrow`), never widened. And a callee
who may be in several zones (a toll-free number, an area code across a zone
line) may be called only while the window is open in every one of them:
`callee_rules` turns a window, the floor and the candidate zones into the rules
that must all hold, and `all_open` / `next_open_all` answer for all of them at once.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from .errors import FieldError, InvalidInput
from .phones import is_fictional_number, timezones_for_number

__all__ = [
    "DEFAULT_WINDOW",
    "UNRESTRICTED",
    "CallingWindow",
    "Rule",
    "all_open",
    "callee_rules",
    "closes_at",
    "is_open",
    "narrow",
    "next_open",
    "next_open_all",
    "parse_calling_hours",
    "parse_window",
    "rules_for_call",
]

MINUTES_PER_DAY = 24 * 60
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_BY_NAME = {
    name: index for names in (_DAY_NAMES, _FULL_DAY_NAMES) for index, name in enumerate(names)
}
_ALL_DAYS = frozenset(range(7))
_KEYS = ("start", "end", "days", "timezone")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
# Names the tz database ships that are not places: "localtime" is whatever the
# server's clock is set to, "Factory" is a placeholder zone for unconfigured machines.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})
# Up to two weeks, so that a window whose only day falls in a time-zone gap one
# week (a whole day was skipped, as Samoa did in 2011) still opens the next.
_DAYS_TO_SEARCH = 15
_OFFSET_SAMPLE_SECONDS = 6 * 3600


@dataclass(frozen=True)
class CallingWindow:
    """Wall-clock minutes `[start_minute, end_minute)` on `days` (0=Monday..6=Sunday).

    `timezone` is an IANA name that overrides the callee's zone, or None to use it.
    """

    start_minute: int
    end_minute: int
    days: frozenset[int] = _ALL_DAYS
    timezone: str | None = None

    def __post_init__(self) -> None:
        # Accept any set of days but store a frozenset, so windows stay hashable.
        object.__setattr__(self, "days", frozenset(self.days))
        if not 0 <= self.start_minute < self.end_minute <= MINUTES_PER_DAY:
            raise ValueError(
                "a calling window needs 0 <= start_minute < end_minute <= 1440, "
                f"got {self.start_minute} and {self.end_minute}"
            )
        if not self.days or not self.days <= _ALL_DAYS:
            raise ValueError(f"days must be a non-empty set of 0..6, got {sorted(self.days)}")
        if self.timezone is not None:
            _zone(self.timezone)

    @property
    def unrestricted(self) -> bool:
        """True when the window is open around the clock every day of the week."""
        return (
            self.start_minute == 0
            and self.end_minute == MINUTES_PER_DAY
            and len(self.days) == len(_ALL_DAYS)
        )

    def to_json(self) -> dict[str, object]:
        """The window in the shape of the API's `calling_window` object."""
        return {
            "start": _format_clock(self.start_minute),
            "end": _format_clock(self.end_minute),
            "days": [_DAY_NAMES[day] for day in sorted(self.days)],
            "timezone": self.timezone,
        }


DEFAULT_WINDOW = CallingWindow(9 * 60, 20 * 60, _ALL_DAYS, None)
"""09:00 to 20:00 every day in the callee's zone: what a batch gets when it says nothing."""

UNRESTRICTED = CallingWindow(0, MINUTES_PER_DAY, _ALL_DAYS, None)
"""Any time of any day."""


def parse_window(value: object, field: str) -> CallingWindow:
    """Read a `calling_window` object from a request body.

    The shape is `{"start": "09:00", "end": "20:00", "days": ["mon", ..., "sun"],
    "timezone": "America/Chicago"}`. Omitted (or null) `start`, `end` and `days`
    take the defaults 09:00, 20:00 and every day; `end` may be `"24:00"`; days
    are three-letter or full English names in any case. `field` is the path of
    the object in the request, used to name the offending field in errors.
    Raises `InvalidInput` listing every problem found.
    """
    if not isinstance(value, dict):
        raise InvalidInput(
            [
                FieldError(
                    field,
                    'must be an object like {"start": "09:00", "end": "20:00", '
                    '"days": ["mon", "tue", "wed", "thu", "fri"], "timezone": null}',
                )
            ]
        )
    errors: list[FieldError] = []
    for key in value:
        if key not in _KEYS:
            errors.append(
                FieldError(
                    f"{field}.{key}",
                    f"{key!r} is not a calling window setting; "
                    "use only start, end, days and timezone",
                )
            )
    start = _parse_clock(
        value.get("start"), DEFAULT_WINDOW.start_minute, f"{field}.start", errors, is_end=False
    )
    end = _parse_clock(
        value.get("end"), DEFAULT_WINDOW.end_minute, f"{field}.end", errors, is_end=True
    )
    days = _parse_days(value.get("days"), f"{field}.days", errors)
    zone = _parse_zone(value.get("timezone"), f"{field}.timezone", errors)
    if start is not None and end is not None and start >= end:
        errors.append(FieldError(f"{field}.start", _order_problem(start, end)))
    if errors or start is None or end is None or days is None:
        raise InvalidInput(errors)
    return CallingWindow(start, end, days, zone)


def is_open(window: CallingWindow, zone: str | None, now: datetime) -> bool:
    """True if `window` allows a call at the aware instant `now`.

    The window is read in `window.timezone`, else `zone`, else UTC.
    """
    _require_aware(now)
    if window.unrestricted:
        return True
    return _open_at(window, now.astimezone(_zone(window.timezone or zone)))


def next_open(window: CallingWindow, zone: str | None, now: datetime) -> datetime:
    """The first instant at or after `now` when `window` is open, as an aware UTC datetime.

    Returns `now` itself when the window is open at `now`.
    """
    _require_aware(now)
    if window.unrestricted:
        return now
    place = _zone(window.timezone or zone)
    local = now.astimezone(place)
    if _open_at(window, local):
        return now
    opening = _next_start(window, place, local.date(), now)
    # A change of offset can open the window without the clock showing the start
    # time: a start inside a spring-forward gap opens when the clock jumps past it,
    # and a window ending at 01:30 reopens when 02:00 is turned back to 01:00.
    for change in _offset_changes(place, now, opening):
        if _open_at(window, change.astimezone(place)):
            return change
    return opening


def closes_at(window: CallingWindow, zone: str | None, now: datetime) -> datetime | None:
    """When the window that is open at `now` closes, as an aware UTC datetime.

    None if the window is unrestricted (it never closes). A window that runs to
    midnight and is open the next day from midnight counts as one stretch. If
    the window is already closed at `now`, returns `now` (no time is left).
    """
    _require_aware(now)
    if window.unrestricted:
        return None
    place = _zone(window.timezone or zone)
    local = now.astimezone(place)
    if not _open_at(window, local):
        return now.astimezone(UTC)
    day = local.date()
    if window.start_minute == 0 and window.end_minute == MINUTES_PER_DAY:
        # Round-the-clock on some days: the stretch lasts until the first day off.
        # Ends within 6 steps because not all 7 days are in the window.
        while (day + timedelta(days=1)).weekday() in window.days:
            day += timedelta(days=1)
    closing = _first_instant_at(_wall(day, window.end_minute), place, now)
    if closing is None:
        return now.astimezone(UTC)
    # A change of offset can close the window without the clock showing the end
    # time: an end inside a spring-forward gap closes it when the clock jumps past,
    # and a window from 01:15 closes for a while when 02:00 is turned back to 01:00.
    for change in _offset_changes(place, now, closing):
        if not _open_at(window, change.astimezone(place)):
            return change
    return closing


@dataclass(frozen=True)
class Rule:
    """One condition on the instant of a call: `window` is open, read in `zone`."""

    window: CallingWindow
    zone: str | None


def parse_calling_hours(text: str) -> CallingWindow | None:
    """The operator's calling hours from `"08:00-21:00"`; None for `"off"`.

    Raises ValueError saying how to write it.
    """
    value = text.strip().lower()
    if value == "off":
        return None
    start_text, dash, end_text = value.partition("-")
    errors: list[FieldError] = []
    start = _parse_clock(start_text.strip(), 0, "start", errors, is_end=False)
    end = _parse_clock(end_text.strip(), 0, "end", errors, is_end=True)
    if not dash or errors or start is None or end is None or start >= end:
        raise ValueError(
            f"{text!r} is not a range of calling hours; write it like 08:00-21:00 "
            "(start before end, 24-hour clock), or off for no floor"
        )
    return CallingWindow(start, end, _ALL_DAYS, None)


def narrow(window: CallingWindow, floor: CallingWindow | None) -> tuple[CallingWindow, bool]:
    """`window` within the operator's `floor`, and whether that made it narrower.

    A window with its own `timezone` is returned whole (the floor is read in the
    callee's zone, so it stays a rule of its own, see `callee_rules`); it counts as
    narrowed when its hours reach outside the floor's. Raises ValueError when the
    window and the floor share no minute.
    """
    if floor is None:
        return window, False
    start = max(window.start_minute, floor.start_minute)
    end = min(window.end_minute, floor.end_minute)
    narrowed = (start, end) != (window.start_minute, window.end_minute)
    if window.timezone is not None:
        return window, narrowed
    if start >= end:
        raise ValueError(
            f"the window {_format_clock(window.start_minute)}-{_format_clock(window.end_minute)} "
            f"is outside the operator's calling hours "
            f"{_format_clock(floor.start_minute)}-{_format_clock(floor.end_minute)} "
            "(the callee's local time); choose hours inside them"
        )
    return CallingWindow(start, end, window.days, None), narrowed


def callee_rules(
    window: CallingWindow, zones: tuple[str, ...], floor: CallingWindow | None
) -> tuple[Rule, ...]:
    """The rules a call to a callee who may be in any of `zones` must all meet.

    `window` is the tenant's window already `narrow`ed; `floor` is the operator's
    hours (None: no floor, or the number is exempt). A window without its own
    zone and the floor are read in every candidate zone. `zones` may not be
    empty: an unknown zone is never taken to be UTC.
    """
    if not zones:
        raise ValueError("no candidate time zone for the callee")
    rules: list[Rule] = []
    if window.timezone is not None:
        rules.append(Rule(window, window.timezone))
        if floor is not None:
            rules.extend(Rule(floor, zone) for zone in zones)
    else:
        merged = window if floor is None else narrow(window, floor)[0]
        rules.extend(Rule(merged, zone) for zone in zones)
    return tuple(rule for rule in rules if not rule.window.unrestricted)


def rules_for_call(
    window: CallingWindow, to: str, zone: str | None, floor: CallingWindow | None
) -> tuple[Rule, ...] | None:
    """The rules for a call to `to`: `zone` if the caller gave one, else every zone
    the number may be in; the floor unless `to` is a fictional number. None when
    the callee's zone is unknown (the caller must ask for one, never assume UTC)."""
    zones = (zone,) if zone else timezones_for_number(to)
    if not zones:
        return None
    return callee_rules(window, zones, None if is_fictional_number(to) else floor)


def all_open(rules: tuple[Rule, ...], now: datetime) -> bool:
    """True if every rule allows a call at the aware instant `now`."""
    return all(is_open(rule.window, rule.zone, now) for rule in rules)


def next_open_all(rules: tuple[Rule, ...], now: datetime) -> datetime | None:
    """The first instant at or after `now` when every rule is open; None if none is
    within two weeks (the rules never meet: the caller must say so, not guess)."""
    _require_aware(now)
    horizon = now + timedelta(days=_DAYS_TO_SEARCH)
    instant = now
    while instant <= horizon:
        # Each rule's next opening is no later than the first instant they all
        # share, so moving to it never skips that instant; when no rule moves,
        # they all hold.
        moved = False
        for rule in rules:
            if not is_open(rule.window, rule.zone, instant):
                instant = next_open(rule.window, rule.zone, instant)
                moved = True
        if not moved:
            return instant
    return None


def _next_start(window: CallingWindow, place: tzinfo, today: date, now: datetime) -> datetime:
    """The first instant after `now` at which the clock shows the window's start.

    Openings caused by a change of offset are left to the caller (see next_open).
    """
    for offset in range(_DAYS_TO_SEARCH):
        day = today + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opening = _first_instant_at(_wall(day, window.start_minute), place, now)
        if opening is None:
            continue
        wall = opening.astimezone(place)
        # A start inside a spring-forward gap reads as a time after the gap, which
        # may be past the end or on the next day; then the day's window does not
        # open by the clock reaching its start (next_open looks at the jump itself).
        if wall.date() == day and _open_at(window, wall):
            return opening
    raise AssertionError(f"{window} did not open within {_DAYS_TO_SEARCH} days of {now}")


def _offset_changes(place: tzinfo, after: datetime, before: datetime) -> Iterator[datetime]:
    """The instants strictly between `after` and `before` at which `place` changes offset.

    Offsets are sampled every few hours and each change is found by bisection, so
    two changes less than that apart would be seen as none; the tz database has
    no such pair.
    """
    if place is UTC:
        return
    low = math.floor(after.timestamp())
    stop = math.ceil(before.timestamp())
    while low < stop:
        high = min(low + _OFFSET_SAMPLE_SECONDS, stop)
        offset = _offset_at(low, place)
        if _offset_at(high, place) == offset:
            low = high
            continue
        while high - low > 1:
            middle = (low + high) // 2
            if _offset_at(middle, place) == offset:
                low = middle
            else:
                high = middle
        change = datetime.fromtimestamp(high, UTC)
        if after < change < before:
            yield change
        low = high


def _offset_at(timestamp: int, place: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, place).utcoffset()


@functools.cache
def _zone(name: str | None) -> tzinfo:
    """The tzinfo for an IANA name (None means UTC); ValueError if there is no such zone."""
    if name is None or name == "UTC":
        return UTC
    if name in _NOT_PLACES:
        raise ValueError(f"{name!r} is not the time zone of a place")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        # KeyError is ZoneInfoNotFoundError; OSError covers names that are directories.
        raise ValueError(f"{name!r} is not an IANA time zone name") from None


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")


def _open_at(window: CallingWindow, local: datetime) -> bool:
    if local.weekday() not in window.days:
        return False
    minute = local.hour * 60 + local.minute
    return window.start_minute <= minute < window.end_minute


def _wall(day: date, minute: int) -> datetime:
    """The naive local wall-clock time `minute` minutes after midnight starting `day`."""
    return datetime.combine(day, time()) + timedelta(minutes=minute)


def _first_instant_at(wall: datetime, place: tzinfo, after: datetime) -> datetime | None:
    """An instant later than `after` at which the clock in `place` reads `wall`, or None.

    On a fall-back day the later of the two readings is used if the earlier one
    is past. A `wall` that does not exist (it falls in a spring-forward gap) gives
    an instant just after the gap, which is later than the true first instant at
    or past `wall`, the end of the gap itself; callers find that one among the
    offset changes before the instant returned here.
    """
    instant = wall.replace(tzinfo=place).astimezone(UTC)
    if instant <= after:
        instant = wall.replace(tzinfo=place, fold=1).astimezone(UTC)
    return instant if instant > after else None


def _format_clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _parse_clock(
    value: object, default: int, path: str, errors: list[FieldError], *, is_end: bool
) -> int | None:
    if value is None:
        return default
    example = '"20:00"' if is_end else '"09:00"'
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a time of day as a string, like {example}"))
        return None
    match = _CLOCK.fullmatch(value.strip())
    if match is not None:
        hours, minutes = int(match.group(1)), int(match.group(2))
        if hours < 24 and minutes < 60:
            return hours * 60 + minutes
        if hours == 24 and minutes == 0:
            if is_end:
                return MINUTES_PER_DAY
            errors.append(
                FieldError(
                    path, '"24:00" can only end a window; a window from midnight starts at "00:00"'
                )
            )
            return None
    errors.append(
        FieldError(
            path,
            f"{value!r} is not a time of day; write it as HH:MM on a 24-hour clock, "
            f"like {example}" + (', or "24:00" for the end of the day' if is_end else ""),
        )
    )
    return None


def _parse_days(value: object, path: str, errors: list[FieldError]) -> frozenset[int] | None:
    if value is None:
        return _ALL_DAYS
    if not isinstance(value, list | tuple):
        errors.append(FieldError(path, 'must be an array of day names like ["mon", "tue", "wed"]'))
        return None
    if not value:
        errors.append(
            FieldError(path, "must name at least one day; leave it out to allow every day")
        )
        return None
    days: set[int] = set()
    ok = True
    for index, name in enumerate(value):
        day = _DAY_BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None
        if day is None:
            errors.append(
                FieldError(
                    f"{path}[{index}]",
                    f"{name!r} is not a day of the week; use mon, tue, wed, thu, fri, sat, "
                    "sun or the full English name",
                )
            )
            ok = False
        else:
            days.add(day)
    return frozenset(days) if ok else None


def _parse_zone(value: object, path: str, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            _zone(value)
        except ValueError:
            pass
        else:
            return value
    errors.append(
        FieldError(
            path,
            f"{value!r} is not an IANA time zone name; use a name like America/New_York, "
            "or null to use the callee's own time zone",
        )
    )
    return None


def _order_problem(start: int, end: int) -> str:
    if end == 0:
        return (
            f"start {_format_clock(start)} is not before end 00:00; "
            'write "24:00" for midnight at the end of the day'
        )
    return (
        f"start {_format_clock(start)} is not before end {_format_clock(end)}; a window "
        f"cannot cross midnight, so split an overnight range into "
        f"{_format_clock(start)}-24:00 and 00:00-{_format_clock(end)} and give the calls "
        "for each part that part's window"
    )
