"""Fill the placeholders of a prompt from one call's properties.

A batch's `base_prompt` (and `first_sentence`, `voicemail_message`, ...) is a
template rendered once per row of `call_data`. Two placeholder spellings are
recognised, because users of the hosted product write both: `{{name}}`, the
canonical one, where whitespace inside the braces is trimmed so `{{ first name }}`
names the key `first name`; and `{name}`, where the name must look like an
identifier (`[A-Za-z_][A-Za-z0-9_.-]*`). Anything else in braces, such as JSON
(`{"a": 1}`), `{ }` or a lone brace, is ordinary text. A double-brace name may
not contain braces, quotes or line breaks, so `{{"a": 1}}` is text too. Keys are
case-sensitive. A row that lacks a placeholder's key is an error, never a prompt
with a hole in it. Templates are split once and cached, so rendering the same
template for a hundred thousand rows costs little more than joining strings.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping

__all__ = ["MissingVariables", "fill", "placeholders", "render", "segments"]

_PLACEHOLDER = re.compile(
    r"\{\{\s*(?P<double>[^{}\"\s](?:[^{}\"\r\n]*[^{}\"\s])?)\s*\}\}"
    r"|\{(?P<single>[A-Za-z_][A-Za-z0-9_.-]*)\}"
)


# One encoder for every value: json.dumps() with options builds a new encoder per
# call, which costs more than the rest of rendering a row.
_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


class MissingVariables(ValueError):
    """The values given for a template lack some of its placeholders; see `names`."""

    names: list[str]

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        # args holds the list itself so that pickling rebuilds an equal exception.
        super().__init__(self.names)

    def __str__(self) -> str:
        listed = ", ".join(repr(name) for name in self.names)
        plural = "s" if len(self.names) != 1 else ""
        return (
            f"no value for placeholder{plural} {listed}; "
            "add the key to the call's properties or remove the placeholder from the text"
        )


def placeholders(template: str) -> list[str]:
    """Return the names of the placeholders in `template`, each once, in order of appearance."""
    return list(dict.fromkeys(_split(template)[1]))


def segments(template: str) -> list[tuple[str, str | None]]:
    """`template` as (literal text, placeholder name or None) pairs, in order: what a
    page needs to show the placeholders marked."""
    literals, names = _split(template)
    return [*zip(literals, names, strict=False), (literals[-1], None)]


def render(template: str, values: Mapping[str, object]) -> str:
    """Return `template` with every placeholder replaced by its value from `values`.

    Values become text as a person would write them: `None` is empty, booleans are
    `true`/`false`, numbers use `str`, objects and arrays are JSON. The inserted
    text is never searched for placeholders again. Raises `MissingVariables`
    naming every placeholder that `values` lacks, in order of first appearance.
    """
    literals, names = _split(template)
    if not names:
        return template
    parts = [literals[0]]
    missing: list[str] | None = None
    for name, literal in zip(names, literals[1:], strict=True):
        try:
            value = values[name]
        except KeyError:
            if missing is None:
                missing = []
            missing.append(name)
            continue
        parts.append(value if type(value) is str else _as_text(value))
        parts.append(literal)
    if missing is not None:
        raise MissingVariables(list(dict.fromkeys(missing)))
    return "".join(parts)


def fill(template: str, values: Mapping[str, object], *, default: str | None = "") -> str:
    """`template` with `{{name}}` filled from `values`; a missing name becomes `default`,
    or stays as written (`{{name}}`) when `default` is None."""
    names = placeholders(template)
    if not names:
        return template
    filled = {
        n: values[n] if n in values else ("{{" + n + "}}" if default is None else default)
        for n in names
    }
    return render(template, filled)


@functools.lru_cache(maxsize=128)
def _split(template: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a template into n+1 literal pieces around its n placeholder names."""
    literals: list[str] = []
    names: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        literals.append(template[position : match.start()])
        names.append(match.group("double") or match.group("single"))
        position = match.end()
    literals.append(template[position:])
    return tuple(literals), tuple(names)


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        return _JSON.encode(value)
    return str(value)
