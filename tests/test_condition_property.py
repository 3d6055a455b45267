"""The condition evaluator against a small reference implementation written from SPEC 4 (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd.conditions import Scope, evaluate, parse_condition

RANKS = ["debug", "info", "low", "notice", "medium", "warning", "high", "error", "critical", "fatal"]
FIELDS = ["a", "b", "c", "missing"]
VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.0, "1", "2.5", "x", "abc", "ab", "", True, False, None]),
    st.sampled_from([*RANKS, "HIGH", "nope"]),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00+02:00", "2026-06-01"]),
)
OPERATORS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "ends_with", "exists"]


def number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v) if isinstance(v, str) and v.strip() else None
    except ValueError:
        return None


def instant(v: Any) -> Any:
    from datetime import UTC, datetime

    if not isinstance(v, str) or len(v) < 10 or not v[:4].isdigit():
        return None
    try:
        moment = datetime.fromisoformat(v)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def pair(a: Any, b: Any) -> tuple[Any, Any] | None:
    """SPEC 4: numbers as numbers, severities by rank, ISO timestamps as instants; else not orderable."""
    if number(a) is not None and number(b) is not None:
        return number(a), number(b)
    if isinstance(a, str) and isinstance(b, str):
        if a.lower() in RANKS and b.lower() in RANKS:
            return RANKS.index(a.lower()), RANKS.index(b.lower())
        if instant(a) is not None and instant(b) is not None:
            return instant(a), instant(b)
    return None


def same(a: Any, b: Any) -> bool:
    p = pair(a, b)
    if p is not None:
        return bool(p[0] == p[1])
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def reference(clause: dict[str, Any], data: dict[str, Any]) -> bool:
    if "all" in clause:
        return all(reference(c, data) for c in clause["all"])
    if "any" in clause:
        return any(reference(c, data) for c in clause["any"])
    if "not" in clause:
        return not reference(clause["not"], data)
    op, value, present = clause["operator"], clause["value"], clause["field"] in data
    actual = data.get(clause["field"])
    if op == "exists":
        return present == bool(value)
    if not present:
        return op in ("ne", "not_in")
    if op == "eq":
        return same(actual, value)
    if op == "ne":
        return not same(actual, value)
    if op == "in":
        return any(same(actual, v) for v in value)
    if op == "not_in":
        return not any(same(actual, v) for v in value)
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        return isinstance(actual, list) and any(same(x, value) for x in actual)
    if op in ("starts_with", "ends_with"):
        ok = isinstance(actual, str) and isinstance(value, str)
        return ok and (actual.startswith(value) if op == "starts_with" else actual.endswith(value))
    p = pair(actual, value)
    if p is None:
        return False
    return {"gt": p[0] > p[1], "gte": p[0] >= p[1], "lt": p[0] < p[1], "lte": p[0] <= p[1]}[op]


@st.composite
def clauses(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATORS))
    value = draw(st.lists(VALUES, max_size=3)) if op in ("in", "not_in") else draw(VALUES)
    return {"field": draw(st.sampled_from(FIELDS)), "operator": op, "value": value}


CONDITIONS = st.recursive(
    clauses(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        inner.map(lambda x: {"not": x}),
    ),
    max_leaves=6,
)
DATA = st.dictionaries(st.sampled_from(FIELDS[:3]), st.one_of(VALUES, st.lists(VALUES, max_size=3)), max_size=3)


@settings(max_examples=1500, deadline=None)
@given(condition=CONDITIONS, data=DATA)
def test_evaluate_agrees_with_the_reference(condition: dict[str, Any], data: dict[str, Any]) -> None:
    parsed, errors = parse_condition(condition, "")
    assert errors == []
    assert parsed is not None
    context = {"event": {"type": "t", "data": data}}
    assert evaluate(parsed, context, Scope.EVENT) is reference(condition, data)
