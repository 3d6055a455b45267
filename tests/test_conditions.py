"""Parsing the condition language (SPEC 4): the tree it builds and the errors it reports."""

from __future__ import annotations

from typing import Any

import pytest

from triggerd.conditions import AllOf, AnyOf, Clause, Not, Operator, clauses, parse_condition


def parsed(raw: Any) -> Any:
    condition, errors = parse_condition(raw, "/c")
    assert errors == []
    return condition


@pytest.mark.parametrize(
    ("text", "operator", "value"),
    [
        (">= high", Operator.GTE, "high"),
        ("> 5", Operator.GT, 5),
        ("<= 2.5", Operator.LTE, 2.5),
        ("!= done", Operator.NE, "done"),
        ("== true", Operator.EQ, True),
        ("high", Operator.EQ, "high"),
        ("<html>", Operator.EQ, "<html>"),
        ("==", None, None),
    ],
)
def test_shorthand_operators(text: str, operator: Operator | None, value: Any) -> None:
    condition, errors = parse_condition({"severity": text}, "/c")
    if operator is None:
        assert [e.message for e in errors] == ["operator '==' in '==' needs a value after it"]
        return
    assert isinstance(condition, Clause)
    assert (condition.field.dotted, condition.operator, condition.value) == (("severity",), operator, value)


def test_shorthand_list_means_in_and_numbers_stay_numbers() -> None:
    condition = parsed({"status": ["open", "new"], "retries": 3})
    assert isinstance(condition, AllOf)
    assert [(c.operator, c.value) for c in clauses(condition)] == [
        (Operator.IN, ["open", "new"]),
        (Operator.EQ, 3),
    ]


def test_structured_clause_with_jsonpath_field() -> None:
    condition = parsed({"field": "$.headers['x-github-event']", "operator": "eq", "value": "pull_request"})
    assert isinstance(condition, Clause)
    assert condition.field.path is not None
    assert condition.field.path.find({"headers": {"x-github-event": "pull_request"}}) == ["pull_request"]


def test_groups_nest() -> None:
    condition = parsed(
        {
            "all": [
                {"field": "$.body.action", "operator": "in", "value": ["opened"]},
                {"not": {"field": "$.body.draft", "operator": "eq", "value": True}},
            ],
            "any": [{"a": 1}, {"b": 2}],
        }
    )
    assert isinstance(condition, AllOf)
    first, second = condition.items
    assert isinstance(first, AllOf) and isinstance(first.items[1], Not)
    assert isinstance(second, AnyOf) and len(second.items) == 2


def test_exists_needs_no_value_and_matches_compiles() -> None:
    exists = parsed({"field": "x", "operator": "exists"})
    assert isinstance(exists, Clause) and exists.value is True
    matches = parsed({"field": "x", "operator": "matches", "value": "^db-[0-9]+$"})
    assert isinstance(matches, Clause) and matches.pattern is not None and matches.pattern.search("db-12")


@pytest.mark.parametrize(
    ("raw", "pointer", "message"),
    [
        ("severity", "/c", "a condition is a mapping (shorthand, {field, operator, value}, all, any or not)"),
        ({"field": "x", "operator": "gt"}, "/c", "operator 'gt' needs a 'value'"),
        ({"field": "x", "operator": "in", "value": "a"}, "/c", "operator 'in' needs a list value"),
        (
            {"field": "x", "value": 1, "severity": 2},
            "/c/severity",
            "a clause with 'field' takes only field, operator and value, not 'severity'",
        ),
        ({"all": []}, "/c/all", "'all' takes a non-empty list of conditions"),
        (
            {"any": [{"a": {"b": 1}}]},
            "/c/any/0/a",
            "shorthand 'a' takes a value or \"<op> <value>\"; use {field, operator, value} for more",
        ),
        (
            {"field": "x", "operator": "matches", "value": 5},
            "/c",
            "operator 'matches' needs a regular expression string",
        ),
        ({"field": "", "value": 1}, "/c/field", "a condition field is a non-empty string"),
        (
            {"not": {"x": "~= y"}},
            "/c/not/x",
            "unknown condition operator '~=' (expected one of: eq, ne, gt, gte, "
            "lt, lte, in, not_in, contains, starts_with, ends_with, matches, exists, ==, !=, >, >=, <, <=)",
        ),
    ],
)
def test_errors_carry_the_pointer_of_the_offending_node(raw: Any, pointer: str, message: str) -> None:
    condition, errors = parse_condition(raw, "/c")
    assert condition is None
    assert [(e.pointer, e.message) for e in errors] == [(pointer, message)]


def test_every_error_is_reported_not_just_the_first() -> None:
    _, errors = parse_condition({"a": "=> 1", "b": "=< 2"}, "")
    assert [e.pointer for e in errors] == ["/a", "/b"]


def test_structured_operator_defaults_to_eq_and_takes_symbols() -> None:
    plain = parsed({"field": "x", "value": 1})
    symbol = parsed({"field": "x", "operator": ">=", "value": 1})
    assert isinstance(plain, Clause) and plain.operator is Operator.EQ
    assert isinstance(symbol, Clause) and symbol.operator is Operator.GTE
