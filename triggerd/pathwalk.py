"""JSONPath walked with a node budget (SPEC 4, last paragraph; SPEC 3.5).

jsonpath-ng parses every path, but its evaluation cannot be stopped midway: `$..name` on a
1 MB body holds the event loop for a second. So the structural part of the language
(fields, indices, wildcards, slices, filters, recursive descent) is walked here over plain
values, counting every node it visits against a budget, with the results jsonpath-ng
would give (tests/test_mapping.py checks that). What is left (`parent`, unions, the
string and arithmetic extensions) still runs in jsonpath-ng, but only on a context small
enough that its worst case stays within the budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonpath_ng.ext.filter import Expression, Filter
from jsonpath_ng.ext.string import Sub
from jsonpath_ng.jsonpath import Child, Descendants, Fields, Index, JSONPath, Root, Slice, Wildcard

MAX_PATH_NODES = 100_000


class Exhausted(Exception):
    """Raised inside a walk when it has visited its budget of nodes."""


class Budget:
    """How many more nodes a walk may visit."""

    __slots__ = ("left",)

    def __init__(self, nodes: int) -> None:
        self.left = nodes

    def spend(self, nodes: int) -> None:
        self.left -= nodes
        if self.left < 0:
            raise Exhausted


@dataclass(frozen=True, slots=True)
class _Names:
    """`.a` or `['a','b']`: the named members of objects."""

    names: tuple[str, ...]

    def apply(self, values: list[Any], budget: Budget) -> list[Any]:
        found = [value[name] for value in values if isinstance(value, dict) for name in self.names if name in value]
        budget.spend(len(values) + len(found))
        return found


@dataclass(frozen=True, slots=True)
class _Indices:
    """`[0]`, `[-1]`, `[0,2]`: elements of arrays, counted from the end when negative."""

    indices: tuple[int, ...]

    def apply(self, values: list[Any], budget: Budget) -> list[Any]:
        found = [v[i] for v in values if isinstance(v, list) for i in self.indices if -len(v) <= i < len(v)]
        budget.spend(len(values) + len(found))
        return found


class _Children:
    """`*`, `[*]`: every element of an array and every member of an object."""

    def apply(self, values: list[Any], budget: Budget) -> list[Any]:
        found: list[Any] = []
        for value in values:
            budget.spend(1 + (len(value) if isinstance(value, list | dict) else 0))
            if isinstance(value, list):
                found.extend(value)
            elif isinstance(value, dict):
                found.extend(value.values())
        return found


@dataclass(frozen=True, slots=True)
class _Local:
    """A slice or a filter: jsonpath-ng's own code on one value and its children, charged per child."""

    node: Any

    def apply(self, values: list[Any], budget: Budget) -> list[Any]:
        found: list[Any] = []
        for value in values:
            budget.spend(1 + (len(value) if isinstance(value, list | dict) else 0))
            found.extend(match.value for match in self.node.find(value))
        return found


@dataclass(frozen=True, slots=True)
class _Descend:
    """`..`: the rest of the path from every node below, the node itself first, in document order."""

    rest: tuple[Step, ...]

    def apply(self, values: list[Any], budget: Budget) -> list[Any]:
        found: list[Any] = []
        stack = values[::-1]
        while stack:
            value = stack.pop()
            budget.spend(1)
            found.extend(walk(self.rest, [value], budget))
            if isinstance(value, list):
                stack.extend(reversed(value))
            elif isinstance(value, dict):
                stack.extend(reversed(value.values()))
        return found


Step = _Names | _Indices | _Children | _Local | _Descend


def walk(steps: tuple[Step, ...], values: list[Any], budget: Budget) -> list[Any]:
    """Every value the steps reach from values, in document order; raises Exhausted past the budget."""
    for step in steps:
        values = step.apply(values, budget)
    return values


def chain(steps: tuple[Step, ...]) -> tuple[str | int, ...] | None:
    """The keys of a path that names one member or element at each step (`$.body.pr.number`),
    the common case, which cannot outgrow any budget; None for any other path."""
    keys: list[str | int] = []
    for step in steps:
        if isinstance(step, _Names) and len(step.names) == 1:
            keys.append(step.names[0])
        elif isinstance(step, _Indices) and len(step.indices) == 1:
            keys.append(step.indices[0])
        else:
            return None
    return tuple(keys)


def follow(keys: tuple[str | int, ...], data: Any) -> list[Any]:
    """The one value at the end of a chain of keys, in a list, or an empty list."""
    current = data
    for key in keys:
        if isinstance(key, str):
            if not isinstance(current, dict) or key not in current:
                return []
        elif not isinstance(current, list) or not -len(current) <= key < len(current):
            return []
        current = current[key]
    return [current]


def plan(expression: Any) -> tuple[Step, ...] | None:
    """The steps of a path from `$`, or None when it holds something only jsonpath-ng can evaluate."""
    steps = _relative(expression, rooted=True)
    return tuple(steps) if steps is not None else None


def _relative(node: Any, rooted: bool) -> list[Step] | None:
    kind = type(node)
    if kind is Root:
        return [] if rooted else None  # `$` further in would restart from the top: not a walk
    if kind is Child:
        left, right = _relative(node.left, rooted), _relative(node.right, rooted=False)
        return None if left is None or right is None else left + right
    if kind is Descendants:
        left, right = _relative(node.left, rooted), _relative(node.right, rooted=False)
        return None if left is None or right is None else [*left, _Descend(tuple(right))]
    if rooted:
        return None  # a path must start at `$`
    if kind is Fields:
        # jsonpath-ng < 2 reads a field '*' built by Fields('*') as a wildcard
        return [_Children()] if getattr(node, "_deprecated_wildcard_use", False) else [_Names(tuple(node.fields))]
    if kind is Index:
        return [_Indices(tuple(node.indices))]
    if kind is Wildcard:
        return [_Children()]
    if kind is Slice:
        return [_Local(node)]
    if kind is Filter and _plain_filter(node):
        return [_Local(node)]
    return None


def _plain_filter(node: Filter) -> bool:
    """A filter that looks at each candidate alone and does not descend: linear in its children."""
    return not any(isinstance(inner, Root | Descendants) for inner in nodes(node))


def nodes(expression: Any) -> Iterator[Any]:
    """Every node of a parsed path, filters' expressions included."""
    stack = [expression]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Filter):
            stack.extend(node.expressions)
        elif isinstance(node, Expression):
            stack.append(node.target)
            if isinstance(node.value, JSONPath):
                stack.append(node.value)
        for name in ("left", "right", "operands"):
            child = getattr(node, name, None)
            if isinstance(child, list):
                stack.extend(child)
            elif child is not None:
                stack.append(child)


def unbounded(expression: Any) -> str | None:
    """What in a path cannot be bounded in time (a backtracking regular expression), or None."""
    for node in nodes(expression):
        if isinstance(node, Sub):
            return "`sub(/regex/, ...)`"
        if isinstance(node, Expression) and node.op == "=~":
            return "the =~ operator"
    return None


def fallback_limit(expression: Any) -> int:
    """How large a context jsonpath-ng may evaluate this path on within the budget.

    Each `..` can multiply the work by the size of the context, so the context may hold at
    most MAX_PATH_NODES ** (1 / (1 + number of `..`)) nodes.
    """
    descents = sum(1 for node in nodes(expression) if isinstance(node, Descendants))
    return int(MAX_PATH_NODES ** (1 / (1 + descents)))


def fits(data: Any, limit: int) -> bool:
    """Whether data holds at most limit nodes (counting stops as soon as it is over)."""
    budget = Budget(limit)
    stack = [data]
    try:
        while stack:
            value = stack.pop()
            budget.spend(1)
            if isinstance(value, list):
                stack.extend(value)
            elif isinstance(value, dict):
                stack.extend(value.values())
    except Exhausted:
        return False
    return True
