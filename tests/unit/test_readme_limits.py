"""The README's table of field limits is the one the code enforces."""

from __future__ import annotations

from pathlib import Path

from callfleet.domain.call_fields import limits_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_limit_the_code_enforces() -> None:
    text = README.read_text()
    table = text.split("<!-- limits:begin -->", 1)[1].split("<!-- limits:end -->", 1)[0]
    assert table.strip() == limits_markdown().strip(), (
        "README.md's limits table is stale: paste the output of "
        "python -c 'from callfleet.domain.call_fields import limits_markdown; "
        "print(limits_markdown())' between its limits markers"
    )
