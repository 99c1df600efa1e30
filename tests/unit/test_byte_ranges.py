"""`Range` headers (RFC 9110 §14) resolved against a resource's size."""

from __future__ import annotations

import pytest

from callfleet.domain.byte_ranges import ByteRange, Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 99)),
        ("bytes=500-", 1000, ByteRange(500, 999)),
        ("bytes=-100", 1000, ByteRange(900, 999)),
        ("bytes=-5000", 1000, ByteRange(0, 999)),  # a suffix longer than the resource
        ("bytes=900-5000", 1000, ByteRange(900, 999)),  # an end past the end is clipped
        ("BYTES = 1 - 2", 10, ByteRange(1, 2)),
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-1,5-6", 10, None),  # several ranges: we send it all (RFC allows)
        ("items=0-1", 10, None),
        ("bytes=5-2", 10, None),  # invalid: ignored
        ("bytes=-", 10, None),
    ],
)
def test_ranges(header: str | None, size: int, want: ByteRange | None) -> None:
    assert parse_range(header, size) == want


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)])
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


def test_content_range() -> None:
    assert ByteRange(100, 199).content_range(1000) == "bytes 100-199/1000"
    assert ByteRange(100, 199).length == 100
