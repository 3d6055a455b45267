"""The condition language of webhook filters and event conditions (SPEC 4).

Parse once into a small tree of Clause / AllOf / AnyOf / Not, then evaluate it
many times against trigger contexts (evaluate), or with every clause's result
(explain, for `triggerd test`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from triggerd.config.documents import resolve_plain
from triggerd.errors import ConditionError, PathError, PatternError
from triggerd.mapping import JsonPath, compile_path, find_dotted
from triggerd.patterns import Regex, compile_regex


class Operator(StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    MATCHES = "matches"
    EXISTS = "exists"


SHORTHAND = {
    "==": Operator.EQ,
    "!=": Operator.NE,
    ">": Operator.GT,
    ">=": Operator.GTE,
    "<": Operator.LT,
    "<=": Operator.LTE,
}
_SHORTHAND = re.compile(r"\s*(==|!=|>=|<=|>|<)(?:\s+(.*)|\s*)", re.DOTALL)
_OPERATOR_LIKE = re.compile(r"\s*([<>=!~]+)(\s|$)")
_GROUP_KEYS = frozenset({"all", "any", "not"})
_CLAUSE_KEYS = frozenset({"field", "operator", "value"})


@dataclass(frozen=True, slots=True)
class FieldRef:
    """Where a clause reads its value: a JSONPath on the context, or a dotted name."""

    text: str
    path: JsonPath | None
    dotted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Clause:
    field: FieldRef
    operator: Operator
    value: Any
    pointer: str
    pattern: Regex | None = None  # RE2, for `matches`


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition = Clause | AllOf | AnyOf | Not


def clauses(condition: Condition) -> Iterator[Clause]:
    """Every clause of a condition, depth first."""
    if isinstance(condition, Clause):
        yield condition
    elif isinstance(condition, Not):
        yield from clauses(condition.item)
    else:
        for item in condition.items:
            yield from clauses(item)


def parse_condition(raw: Any, pointer: str = "") -> tuple[Condition | None, list[ConditionError]]:
    """Parse a condition mapping; returns it (None on errors) with every error found."""
    errors: list[ConditionError] = []
    condition = _Parser(errors).condition(raw, pointer)
    return (None, errors) if errors else (condition, errors)


def _join(pointer: str, key: str | int) -> str:
    return f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"


def literal(text: str) -> Any:
    """A shorthand operand: numbers, booleans and null as YAML would read them, else the text."""
    return resolve_plain(text.strip())


class _Parser:
    def __init__(self, errors: list[ConditionError]) -> None:
        self.errors = errors

    def fail(self, pointer: str, message: str) -> None:
        self.errors.append(ConditionError(pointer, message))

    def condition(self, raw: Any, pointer: str) -> Condition:
        if not isinstance(raw, dict):
            self.fail(pointer, "a condition is a mapping (shorthand, {field, operator, value}, all, any or not)")
            return AllOf(())
        if "field" in raw:
            extra = sorted(set(raw) - _CLAUSE_KEYS)
            if extra:
                self.fail(
                    _join(pointer, extra[0]),
                    f"a clause with 'field' takes only field, operator and value, not '{extra[0]}'",
                )
            return self.structured(raw, pointer)
        items: list[Condition] = []
        for key, value in raw.items():
            child = _join(pointer, key)
            if key in ("all", "any"):
                if not isinstance(value, list) or not value:
                    self.fail(child, f"'{key}' takes a non-empty list of conditions")
                    continue
                group = tuple(self.condition(item, _join(child, i)) for i, item in enumerate(value))
                items.append(AllOf(group) if key == "all" else AnyOf(group))
            elif key == "not":
                items.append(Not(self.condition(value, child)))
            else:
                items.append(self.shorthand(key, value, child))
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def structured(self, raw: dict[str, Any], pointer: str) -> Condition:
        field = self.field_ref(raw["field"], _join(pointer, "field"))
        name = raw.get("operator", "eq")
        operator = SHORTHAND.get(name) if isinstance(name, str) else None
        if operator is None:
            try:
                operator = Operator(name)
            except ValueError:
                self.fail(_join(pointer, "operator"), _unknown_operator(name))
                return AllOf(())
        if "value" not in raw and operator is not Operator.EXISTS:
            self.fail(pointer, f"operator '{operator}' needs a 'value'")
            return AllOf(())
        return self.clause(field, operator, raw.get("value", True), pointer)

    def shorthand(self, key: str, value: Any, pointer: str) -> Condition:
        field = self.field_ref(key, pointer)
        if isinstance(value, dict):
            self.fail(
                pointer,
                f"shorthand '{key}' takes a value or \"<op> <value>\"; use {{field, operator, value}} for more",
            )
            return AllOf(())
        if isinstance(value, list):
            return self.clause(field, Operator.IN, value, pointer)
        if isinstance(value, str):
            match = _SHORTHAND.fullmatch(value)
            if match:
                operand = match.group(2)
                if operand is None or not operand.strip():
                    self.fail(pointer, f"operator '{match.group(1)}' in {value!r} needs a value after it")
                    return AllOf(())
                return self.clause(field, SHORTHAND[match.group(1)], literal(operand), pointer)
            odd = _OPERATOR_LIKE.match(value)
            if odd:
                self.fail(pointer, _unknown_operator(odd.group(1)))
                return AllOf(())
        return self.clause(field, Operator.EQ, value, pointer)

    def clause(self, field: FieldRef, operator: Operator, value: Any, pointer: str) -> Condition:
        pattern = None
        if operator in (Operator.IN, Operator.NOT_IN) and not isinstance(value, list):
            self.fail(pointer, f"operator '{operator}' needs a list value")
        if operator is Operator.MATCHES:
            if not isinstance(value, str):
                self.fail(pointer, "operator 'matches' needs a regular expression string")
                return AllOf(())
            try:
                pattern = compile_regex(value)
            except PatternError as exc:
                self.fail(pointer, f"regular expression {value!r} does not compile: {exc}")
        return Clause(field, operator, value, pointer, pattern)

    def field_ref(self, text: Any, pointer: str) -> FieldRef:
        if not isinstance(text, str) or not text:
            self.fail(pointer, "a condition field is a non-empty string")
            return FieldRef("", None, ())
        if text.startswith("$"):
            try:
                return FieldRef(text, compile_path(text), ())
            except PathError as exc:
                self.fail(pointer, str(exc))
                return FieldRef(text, None, ())
        return FieldRef(text, None, tuple(text.split(".")))


def _unknown_operator(name: object) -> str:
    known = ", ".join([*Operator, *SHORTHAND])
    return f"unknown condition operator {name!r} (expected one of: {known})"


# --- evaluation ------------------------------------------------------------------

SEVERITIES = ("debug", "info", "low", "notice", "medium", "warning", "high", "error", "critical", "fatal")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


class Scope(StrEnum):
    """Where a bare or dotted field name is looked up (SPEC 4)."""

    WEBHOOK = "webhook"  # in the body
    EVENT = "event"  # in the event's data, then in the event itself


@dataclass(frozen=True, slots=True)
class ClauseResult:
    """One clause as evaluated: for `triggerd test` and logs."""

    field: str
    operator: Operator
    expected: Any
    actual: Any
    found: bool
    result: bool

    def __str__(self) -> str:
        actual = repr(self.actual) if self.found else "missing"
        mark = "true " if self.result else "false"
        return f"{mark} {self.field} {self.operator} {self.expected!r} (actual: {actual})"


def evaluate(condition: Condition, context: Any, scope: Scope) -> bool:
    """Whether the condition holds for the context (short-circuits)."""
    return _evaluate(condition, context, scope, None)


def explain(condition: Condition, context: Any, scope: Scope) -> tuple[bool, list[ClauseResult]]:
    """The verdict and every clause's result (no short-circuit, so each clause is shown)."""
    trace: list[ClauseResult] = []
    return _evaluate(condition, context, scope, trace), trace


def _evaluate(condition: Condition, context: Any, scope: Scope, trace: list[ClauseResult] | None) -> bool:
    if isinstance(condition, Clause):
        found, actual = resolve_field(condition.field, context, scope)
        result = _apply(condition, found, actual)
        if trace is not None:
            trace.append(
                ClauseResult(
                    condition.field.text, condition.operator, condition.value, actual if found else None, found, result
                )
            )
        return result
    if isinstance(condition, Not):
        return not _evaluate(condition.item, context, scope, trace)
    results: Iterable[bool] = (_evaluate(item, context, scope, trace) for item in condition.items)
    if trace is not None:
        results = list(results)  # evaluate every branch for the trace
    return all(results) if isinstance(condition, AllOf) else any(results)


def resolve_field(field: FieldRef, context: Any, scope: Scope) -> tuple[bool, Any]:
    """(found, value): JSONPath on the context, or a dotted name in the body / event data / event."""
    if field.path is not None:
        matches = field.path.find(context)
        if not matches:
            return False, None
        return True, matches[0] if len(matches) == 1 else matches
    if scope is Scope.WEBHOOK:
        roots = [context.get("body")] if isinstance(context, dict) else []
    else:
        event = context.get("event") if isinstance(context, dict) else None
        roots = [event.get("data"), event] if isinstance(event, dict) else []
    for root in roots:
        found, value = find_dotted(root, field.dotted)
        if found:
            return True, value
    return False, None


def _apply(clause: Clause, found: bool, actual: Any) -> bool:
    op, expected = clause.operator, clause.value
    if op is Operator.EXISTS:
        return found == bool(expected)
    if not found:
        return op in (Operator.NE, Operator.NOT_IN)
    if op is Operator.EQ:
        return _equal(actual, expected)
    if op is Operator.NE:
        return not _equal(actual, expected)
    if op is Operator.IN:
        return isinstance(expected, list) and any(_equal(actual, item) for item in expected)
    if op is Operator.NOT_IN:
        return isinstance(expected, list) and not any(_equal(actual, item) for item in expected)
    if op is Operator.CONTAINS:
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list):
            return any(_equal(item, expected) for item in actual)
        return isinstance(actual, dict) and expected in actual
    if op is Operator.STARTS_WITH:
        return isinstance(actual, str) and isinstance(expected, str) and actual.startswith(expected)
    if op is Operator.ENDS_WITH:
        return isinstance(actual, str) and isinstance(expected, str) and actual.endswith(expected)
    if op is Operator.MATCHES:
        return isinstance(actual, str) and clause.pattern is not None and clause.pattern.search(actual)
    pair = _ordered(actual, expected)
    if pair is None:
        return False
    left, right = pair
    comparisons = {
        Operator.GT: left > right,
        Operator.GTE: left >= right,
        Operator.LT: left < right,
        Operator.LTE: left <= right,
    }
    return bool(comparisons[op])


def _equal(actual: Any, expected: Any) -> bool:
    if type(actual) is type(expected) and actual == expected:
        return True  # the same value of the same type is equal under every reading
    pair = _ordered(actual, expected)
    if pair is not None:
        return bool(pair[0] == pair[1])
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected  # true is not 1
    return bool(actual == expected)


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both as numbers, both as severities, or both as instants; None when they cannot be ordered."""
    numbers = _number(left), _number(right)
    if numbers[0] is not None and numbers[1] is not None:
        return numbers
    if isinstance(left, str) and isinstance(right, str):
        ranks = _RANK.get(left.lower()), _RANK.get(right.lower())
        if ranks[0] is not None and ranks[1] is not None:
            return ranks
        instants = _instant(left), _instant(right)
        if instants[0] is not None and instants[1] is not None:
            return instants
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip()) if value.strip() else None
        except ValueError:
            return None
    return None


def _instant(text: str) -> datetime | None:
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
