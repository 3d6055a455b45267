"""Evaluating conditions (SPEC 4): how values compare, missing fields, lookups, and the explanation."""

from __future__ import annotations

from typing import Any

import pytest

from triggerd.conditions import Scope, evaluate, explain, parse_condition


def holds(raw: dict[str, Any], context: dict[str, Any], scope: Scope = Scope.WEBHOOK) -> bool:
    condition, errors = parse_condition(raw, "")
    assert condition is not None, errors
    return evaluate(condition, context, scope)


def body(**fields: Any) -> dict[str, Any]:
    return {"body": fields, "headers": {}}


@pytest.mark.parametrize(
    ("raw", "value", "expected"),
    [
        ({"level": ">= high"}, "critical", True),
        ({"level": ">= high"}, "HIGH", True),
        ({"level": ">= high"}, "warning", False),
        ({"level": ">= high"}, "banana", False),  # cannot be ordered: false, not an error
        ({"n": "> 3"}, "5", True),  # form bodies are strings; numbers compare as numbers
        ({"n": "> 3"}, 10, True),
        ({"n": "<= 2.5"}, 2.5, True),
        ({"n": "> 3"}, "three", False),
        ({"n": 5}, "5", True),
        ({"at": "> 2026-01-01T00:00:00+01:00"}, "2026-01-01T00:30:00Z", True),
        ({"at": "< 2026-01-01T00:00:00Z"}, "2025-12-31", True),
        ({"name": "> abc"}, "abd", False),  # plain strings are not ordered
        ({"flag": True}, 1, False),  # true is not 1
        ({"flag": True}, True, True),
        ({"status": ["open", "new"]}, "new", True),
        ({"status": "!= done"}, "open", True),
    ],
)
def test_comparisons(raw: dict[str, Any], value: Any, expected: bool) -> None:
    field = next(iter(raw))
    assert holds(raw, body(**{field: value})) is expected


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("eq", 1, False),
        ("ne", 1, True),
        ("gt", 1, False),
        ("in", [1], False),
        ("not_in", [1], True),
        ("contains", "x", False),
        ("starts_with", "x", False),
        ("matches", "x", False),
        ("exists", True, False),
        ("exists", False, True),
    ],
)
def test_a_missing_field_is_false_except_for_ne_not_in_and_exists_false(
    operator: str, value: Any, expected: bool
) -> None:
    assert holds({"field": "absent", "operator": operator, "value": value}, body(other=1)) is expected


@pytest.mark.parametrize(
    ("operator", "actual", "value", "expected"),
    [
        ("contains", "a database error", "database", True),
        ("contains", ["a", "b"], "b", True),
        ("contains", {"k": 1}, "k", True),
        ("contains", 42, "4", False),
        ("starts_with", "error.db", "error.", True),
        ("ends_with", "error.db", ".db", True),
        ("matches", "db-17", r"^db-\d+$", True),
        ("matches", 17, r"\d", False),
        ("not_in", "x", ["y"], True),
        ("in", "2", [1, 2], True),
    ],
)
def test_string_list_and_pattern_operators(operator: str, actual: Any, value: Any, expected: bool) -> None:
    assert holds({"field": "f", "operator": operator, "value": value}, body(f=actual)) is expected


def test_names_are_looked_up_in_the_body_for_webhooks_and_in_data_then_event_for_events() -> None:
    assert holds({"pull_request.draft": False}, body(pull_request={"draft": False}))
    event = {"event": {"type": "error.db", "severity": "high", "data": {"severity": "low", "service": "db"}}}
    assert holds({"severity": "low"}, event, Scope.EVENT)  # data wins over the event's own field
    assert holds({"type": "error.db"}, event, Scope.EVENT)
    assert not holds({"type": "error.db"}, {"body": {}, "event": event["event"]}, Scope.WEBHOOK)


def test_jsonpath_with_several_matches_gives_a_list() -> None:
    context = body(labels=[{"name": "bug"}, {"name": "urgent"}])
    assert holds({"field": "$.body.labels[*].name", "operator": "contains", "value": "urgent"}, context)
    assert holds({"$.headers['x-github-event']": "push"}, {"body": {}, "headers": {"x-github-event": "push"}})


def test_groups_and_explanation_show_every_clause() -> None:
    raw = {
        "all": [{"action": ["opened", "synchronize"]}, {"not": {"draft": True}}],
        "any": [{"n": "> 10"}, {"n": "< 0"}],
    }
    condition, _ = parse_condition(raw, "")
    assert condition is not None
    verdict, trace = explain(condition, body(action="opened", draft=False, n=5), Scope.WEBHOOK)
    assert verdict is False
    assert [(c.field, str(c.operator), c.result) for c in trace] == [
        ("action", "in", True),
        ("draft", "eq", False),
        ("n", "gt", False),
        ("n", "lt", False),
    ]
    assert str(trace[2]) == "false n gt 10 (actual: 5)"
    assert evaluate(condition, body(action="opened", draft=False, n=50), Scope.WEBHOOK) is True
