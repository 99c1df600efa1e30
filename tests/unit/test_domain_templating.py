"""Tests for filling prompt placeholders from a call's properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callfleet.domain.templating import MissingVariables, placeholders, render


@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("Hello {{name}}", ["name"]),
        ("Hello {{ name }}", ["name"]),
        ("Hello {{\tfirst name  }}!", ["first name"]),
        ("Hello {name}", ["name"]),
        ("{order.total} {order-id} {_x1}", ["order.total", "order-id", "_x1"]),
        ("{{b}} {a} {{ b }} {b} {{a}}", ["b", "a"]),
        ("{{Name}} {{name}}", ["Name", "name"]),
        ("no placeholders here", []),
        ('reply with {"a": 1} or {"b": {"c": 2}}', []),
        ("{ } {{ }} {{}} {} { name} {name } {first name} {1abc}", []),
        ("a lone { and a lone } and }} and {{", []),
        ('{{"a": 1}}', []),
        ("{{a\nb}}", []),
        ("{{{name}}}", ["name"]),
    ],
)
def test_placeholders_finds_names_in_order_of_first_appearance(
    template: str, names: list[str]
) -> None:
    assert placeholders(template) == names


def test_render_fills_both_spellings() -> None:
    template = "Hi {{ first name }}, your order {order_id} ships {{when}}."
    values = {"first name": "Ada", "order_id": 42, "when": "Monday"}
    assert render(template, values) == "Hi Ada, your order 42 ships Monday."


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (3.5, "3.5"),
        ("", ""),
        ({"a": [1, "é"]}, '{"a": [1, "é"]}'),
        ([1, None, True], "[1, null, true]"),
    ],
)
def test_render_writes_values_as_a_person_would(value: object, text: str) -> None:
    assert render("<{{v}}>", {"v": value}) == f"<{text}>"


def test_render_leaves_non_placeholders_alone() -> None:
    template = 'Answer as {"ok": true} with {name}; braces { } stay.'
    assert render(template, {"name": "Bo"}) == 'Answer as {"ok": true} with Bo; braces { } stay.'


def test_render_never_rescans_inserted_values() -> None:
    values = {"a": "{{b}}", "b": "{a}"}
    assert render("{{a}}|{b}", values) == "{{b}}|{a}"


def test_render_is_case_sensitive() -> None:
    with pytest.raises(MissingVariables) as caught:
        render("{{Name}}", {"name": "x"})
    assert caught.value.names == ["Name"]


def test_render_names_every_missing_variable_once_in_order() -> None:
    with pytest.raises(MissingVariables) as caught:
        render("{{c}} {a} {{ b }} {c} {present} {a}", {"present": 1})
    assert caught.value.names == ["c", "a", "b"]
    assert "'c', 'a', 'b'" in str(caught.value)
    assert "add the key" in str(caught.value)


def test_a_key_present_with_a_none_value_is_not_missing() -> None:
    assert render("[{x}]", {"x": None}) == "[]"


def test_render_without_placeholders_returns_the_template() -> None:
    assert render("plain {text", {}) == "plain {text"


IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
LITERALS = st.text(st.characters(exclude_characters="{}"), max_size=20)
VALUES = st.text(max_size=20)


@given(
    st.lists(st.tuples(LITERALS, IDENTIFIERS, st.booleans(), VALUES), max_size=8),
    LITERALS,
)
def test_render_equals_the_pieces_joined(
    pieces: list[tuple[str, str, bool, str]], tail: str
) -> None:
    values: dict[str, object] = {}
    template = ""
    for literal, name, double, value in pieces:
        values.setdefault(name, value)
        template += literal + ("{{ " + name + " }}" if double else "{" + name + "}")
    template += tail
    expected = "".join(literal + str(values[name]) for literal, name, _, _ in pieces) + tail
    assert render(template, values) == expected
    assert placeholders(template) == list(dict.fromkeys(name for _, name, _, _ in pieces))


@given(st.text(max_size=60), st.dictionaries(st.text(max_size=8), st.text(max_size=8)))
def test_render_either_fills_every_placeholder_or_names_the_missing(
    template: str, values: dict[str, str]
) -> None:
    names = placeholders(template)
    try:
        render(template, values)
    except MissingVariables as error:
        assert error.names == [name for name in names if name not in values]
        assert error.names
    else:
        assert all(name in values for name in names)
