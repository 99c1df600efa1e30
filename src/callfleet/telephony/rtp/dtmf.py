"""DTMF as RTP events (RFC 4733): encode a key press, decode and de-duplicate received ones.

A key press is sent as a run of packets sharing the event's start timestamp:
the first has the marker bit, each carries the duration so far, and the end is
sent three times with the E bit (§2.5.1.4). The receiver reports a digit once, on
the first end packet of a timestamp, or when a new event starts while the
previous one never ended (its end packets were lost).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["DtmfEvent", "DtmfReceiver", "digit_to_event", "event_to_digit", "key_press"]

_DIGITS = "0123456789*#ABCD"


def digit_to_event(digit: str) -> int:
    index = _DIGITS.find(digit.upper())
    if len(digit) != 1 or index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return index


def event_to_digit(event: int) -> str | None:
    return _DIGITS[event] if 0 <= event < len(_DIGITS) else None


@dataclass(frozen=True)
class DtmfEvent:
    event: int
    end: bool
    volume: int
    duration: int

    def to_bytes(self) -> bytes:
        flags = (0x80 if self.end else 0) | (self.volume & 0x3F)
        return struct.pack("!BBH", self.event, flags, min(self.duration, 0xFFFF))

    @classmethod
    def parse(cls, payload: bytes) -> DtmfEvent:
        if len(payload) < 4:
            raise ValueError("telephone-event payload shorter than 4 bytes")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


def key_press(
    digit: str, duration_ms: int = 100, *, ptime_ms: int = 20, volume: int = 10
) -> list[DtmfEvent]:
    """The payloads for one key press: updates every ptime, then three end packets."""
    event = digit_to_event(digit)
    step = 8 * ptime_ms
    total = max(step, 8 * duration_ms)
    updates = [DtmfEvent(event, False, volume, d) for d in range(step, total, step)]
    return updates + [DtmfEvent(event, True, volume, total)] * 3


class DtmfReceiver:
    def __init__(self) -> None:
        self._current: tuple[int, int] | None = None  # (timestamp, event) not yet ended
        self._reported: set[int] = set()

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        """Feed one telephone-event payload; returns a digit when one is complete."""
        try:
            event = DtmfEvent.parse(payload)
        except ValueError:
            return None
        digit: str | None = None
        if self._current is not None and self._current[0] != timestamp:
            lost_ts, lost_event = self._current
            if lost_ts not in self._reported:
                self._remember(lost_ts)
                digit = event_to_digit(lost_event)
            self._current = None
        if timestamp in self._reported:
            return digit
        if event.end:
            self._remember(timestamp)
            self._current = None
            return digit or event_to_digit(event.event)
        self._current = (timestamp, event.event)
        return digit

    def _remember(self, timestamp: int) -> None:
        self._reported.add(timestamp)
        if len(self._reported) > 64:
            self._reported.pop()
