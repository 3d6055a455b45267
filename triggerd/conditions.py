"""The condition language of webhook filters and event conditions (SPEC 4).

Parse once into a small tree of Clause / AllOf / AnyOf / Not, then evaluate it
many times against trigger contexts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from triggerd.config.documents import resolve_plain
from triggerd.errors import ConditionError, PathError
from triggerd.mapping import JsonPath, compile_path


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
    pattern: re.Pattern[str] | None = None


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
                pattern = re.compile(value)
            except re.error as exc:
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
