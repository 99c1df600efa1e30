"""HTTP `Range` requests on one resource (RFC 9110 §14): which bytes to send.

Browsers' audio players seek by asking for `bytes=START-`; downloaders resume with
`bytes=START-END`; `bytes=-N` asks for the last N bytes. One range is served as
206 with `Content-Range`; a header we do not serve as a range (several ranges,
another unit, a malformed one) is ignored and the whole resource sent, as the RFC
allows; a range wholly past the end is 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ByteRange", "Unsatisfiable", "parse_range"]

_ONE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class Unsatisfiable(ValueError):  # noqa: N818 - the RFC's word
    """The range starts past the end of the resource (answer 416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int
    """Inclusive."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to send of a `size`-byte resource, or None for all of it."""
    if not header:
        return None
    found = _ONE.match(header)
    if found is None:
        return None
    first, last = found.group(1), found.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - n), size - 1) if size else _empty(header)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable(header)
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))


def _empty(header: str) -> ByteRange:
    raise Unsatisfiable(header)
