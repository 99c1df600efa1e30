"""A CSV file into `call_data` rows, read incrementally, each row with its line number.

The file has a header row; UTF-8 with or without a BOM; comma, semicolon or tab
separated (sniffed from the header line). The phone column is `phone_number`, or
`phone`, `number`, `to` (case- and space-insensitive), or the one the caller names;
it becomes each row's `phone_number` and every other column is a row property.
Empty lines are skipped; a quoted value may span lines, and a row's line number is
the line it starts on (the header is line 1). The file is decoded and parsed as it
is read, so a large upload is never held as one string.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["CsvProblem", "CsvRows", "PHONE_ALIASES", "read_csv_rows"]

PHONE_ALIASES = ("phone_number", "phonenumber", "phone", "number", "to")
DELIMITERS = (",", ";", "\t")
SAMPLE_BYTES = 64 * 1024
MAX_FIELD = 1024 * 1024
"""The longest single value (csv's own limit is 128 KiB; a row is capped elsewhere)."""


class CsvProblem(Exception):
    """The file as a whole cannot be read as a CSV of calls; `field` names where."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class CsvRows:
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    """The CSV line number each row starts on (`rows[i]` is on line `lines[i]`)."""
    header: list[str] = field(default_factory=list)


def _norm(name: str) -> str:
    return "_".join(name.strip().lower().split())


def _phone_index(header: list[str], phone_column: str | None) -> int:
    normal = [_norm(h) for h in header]
    wanted = (_norm(phone_column),) if phone_column else PHONE_ALIASES
    for alias in wanted:
        if alias in normal:
            return normal.index(alias)
    found = ", ".join(repr(h) for h in header) or "(empty)"
    if phone_column:
        raise CsvProblem(
            f"The CSV has no column {phone_column!r} (named by `phone_column`); its header "
            f"row is: {found}. Name one of these columns in `phone_column`.",
            "phone_column",
        )
    raise CsvProblem(
        "No phone column in the CSV: it has no phone column named `phone_number` (or phone, "
        "number, to); rename one, or set `phone_column` in `batch` to the column's name. "
        f"Its header row is: {found}."
    )


def _delimiter(sample: str) -> str:
    """The header line's most frequent separator (outside quotes); comma by default."""
    line = sample.split("\n", 1)[0]
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _text(binary: IO[bytes]) -> tuple[io.TextIOWrapper, str]:
    """The file as text (BOM dropped) and the delimiter sniffed from its start."""
    start = binary.read(SAMPLE_BYTES)
    if b"\x00" in start:
        raise CsvProblem(
            "The file is not a CSV: it holds binary data (NUL bytes). Upload a CSV text "
            "file, UTF-8, with a header row."
        )
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        sample = decoder.decode(start, final=len(start) < SAMPLE_BYTES)
    except UnicodeDecodeError as exc:
        raise CsvProblem(
            f"The file is not a CSV in UTF-8: byte {exc.start} cannot be decoded. Save the "
            "spreadsheet as 'CSV UTF-8' and upload it again."
        ) from None
    if not sample.strip():
        raise CsvProblem("The CSV file is empty: it needs a header row and one row per call.")
    binary.seek(0)
    wrapper = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    return wrapper, _delimiter(sample.lstrip("\ufeff"))


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each non-empty record with the line it starts on; decoding errors name the line."""
    previous = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise CsvProblem(
                f"The file is not a CSV in UTF-8: line {previous + 1} cannot be decoded. "
                "Save the spreadsheet as 'CSV UTF-8' and upload it again."
            ) from None
        except csv.Error as exc:
            raise CsvProblem(
                f"The CSV cannot be read at line {previous + 1}: {exc}. Check its quoting."
            ) from None
        start = previous + 1
        previous = reader.line_num
        if any(v.strip() for v in values):
            yield start, values


def read_csv_rows(
    binary: IO[bytes], *, phone_column: str | None = None, max_rows: int | None = None
) -> CsvRows:
    """Parse the CSV in `binary` (read from its start); raises CsvProblem for the file.

    Stops with CsvProblem(field="call_data") past `max_rows` rows.
    """
    binary.seek(0)
    text, delimiter = _text(binary)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))
    reader = csv.reader(text, delimiter=delimiter)
    records = _records(reader)
    first = next(records, None)
    if first is None:
        raise CsvProblem("The CSV file is empty: it needs a header row and one row per call.")
    header = [h.strip() for h in first[1]]
    phone = _phone_index(header, phone_column)
    names = list(header)
    names[phone] = "phone_number"
    out = CsvRows(header=header)
    for line, values in records:
        if max_rows is not None and len(out.rows) >= max_rows:
            raise CsvProblem(f"At most {max_rows} rows.", "call_data")
        row: dict[str, Any] = {n: v.strip() for n, v in zip(names, values, strict=False) if n}
        row.setdefault("phone_number", "")
        out.rows.append(row)
        out.lines.append(line)
    text.detach()
    if not out.rows:
        raise CsvProblem("The CSV has a header row but no rows under it: add one row per call.")
    return out
