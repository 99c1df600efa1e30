"""The shape rules of docs/architecture.md that no linter checks for us.

No function in `src/` is longer than 80 lines, unless a comment starting with
`# Long:` on the line above its `def` (or its first decorator) says why. Alembic's
migration scripts are history, not code we shape, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "callfleet"
MIGRATIONS = SRC / "store" / "migrations" / "versions"
MAX_LINES = 80


def long_functions(path: Path) -> list[str]:
    """`name:line (length)` of each function in `path` over the limit and not excused."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        excused = first >= 2 and lines[first - 2].strip().startswith("# Long:")
        if length > MAX_LINES and not excused:
            found.append(f"{node.name}:{node.lineno} ({length})")
    return found


def test_the_rule_sees_a_long_function_and_its_excuse(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    sample = tmp_path / "sample.py"
    sample.write_text(f"def long():\n{body}\n\n\n# Long: a table.\ndef excused():\n{body}\n")
    assert long_functions(sample) == [f"long:1 ({MAX_LINES + 1})"]


def test_no_function_in_src_is_over_80_lines() -> None:
    found = [
        f"{path.relative_to(SRC.parent)}: {hit}"
        for path in sorted(SRC.rglob("*.py"))
        if MIGRATIONS not in path.parents
        for hit in long_functions(path)
    ]
    assert not found, "functions over 80 lines (split them, or say why with '# Long:'):\n" + (
        "\n".join(found)
    )
