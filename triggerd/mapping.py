"""JSONPath on the trigger context (SPEC 3.5) and `{{ dotted.path }}` templates (SPEC 5.1)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as _parse_jsonpath

from triggerd.errors import MissingInput, PathError, PathTooBroad, TemplateError
from triggerd.pathwalk import (
    MAX_PATH_NODES,
    Budget,
    Exhausted,
    Step,
    chain,
    fallback_limit,
    fits,
    follow,
    plan,
    unbounded,
    walk,
)


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A compiled JSONPath expression; compile once with compile_path, find many times.

    Finding is bounded (SPEC 4): a path that would visit more than MAX_PATH_NODES nodes of
    one context raises PathTooBroad instead of holding the event loop (see pathwalk).
    """

    text: str
    expression: Any
    steps: tuple[Step, ...] | None  # None: only jsonpath-ng can evaluate it
    fallback_limit: int = MAX_PATH_NODES  # the largest context jsonpath-ng may evaluate it on
    keys: tuple[str | int, ...] | None = None  # a plain chain of keys: followed without a budget

    def find(self, data: Any) -> list[Any]:
        """Every value the path matches in data, in document order; raises PathTooBroad past the bound."""
        if self.keys is not None:
            return follow(self.keys, data)
        if self.steps is not None:
            try:
                return walk(self.steps, [data], Budget(MAX_PATH_NODES))
            except Exhausted:
                raise PathTooBroad(self.text, MAX_PATH_NODES) from None
        if not fits(data, self.fallback_limit):
            raise PathTooBroad(self.text, MAX_PATH_NODES)
        return [match.value for match in self.expression.find(data)]

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=8192)
def compile_path(text: str) -> JsonPath:
    """Compile a JSONPath (jsonpath-ng extended syntax); raises PathError if it does not compile."""
    if not text.strip().startswith("$"):
        raise PathError(f"JSONPath {text!r} must start with '$'")
    try:
        expression = _parse_jsonpath(text)
    except (JSONPathError, ValueError, TypeError, AttributeError) as exc:
        raise PathError(f"JSONPath {text!r} does not compile: {exc}") from None
    construct = unbounded(expression)
    if construct is not None:
        raise PathError(
            f"JSONPath {text!r} uses {construct}, whose regular expressions can take unbounded time; "
            "use a 'matches' condition (RE2) instead"
        )
    steps = plan(expression)
    return JsonPath(text, expression, steps, fallback_limit(expression), chain(steps) if steps is not None else None)


_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_DOTTED = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True, slots=True)
class Template:
    """Text with `{{ dotted.path }}` placeholders into the run input; no other logic."""

    text: str
    parts: tuple[str | tuple[str, ...], ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Split text into literal parts and placeholder paths; raises TemplateError if malformed."""
        parts: list[str | tuple[str, ...]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1).strip()
            if not _DOTTED.fullmatch(name):
                raise TemplateError(f"placeholder {match.group(0)!r} is not a dotted path like {{{{ a.b }}}}")
            parts.append(text[position : match.start()])
            parts.append(tuple(name.split(".")))
            position = match.end()
        rest = text[position:]
        if "{{" in rest:
            raise TemplateError(f"unclosed '{{{{' in {text!r}")
        parts.append(rest)
        return cls(text, tuple(p for p in parts if p != ""))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(".".join(p) for p in self.parts if isinstance(p, tuple))

    def render(self, data: Any) -> str:
        """Fill every placeholder from data; raises TemplateError naming a missing key."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = lookup(data, part)
            out.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        return "".join(out)


def find_dotted(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) of a dotted path followed through mappings (by key) and lists (by index)."""
    current = data
    for step in path:
        if isinstance(current, dict) and step in current:
            current = current[step]
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return False, None
    return True, current


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    """A dotted path's value; raises TemplateError naming the key when it is missing."""
    found, value = find_dotted(data, path)
    if not found:
        raise TemplateError(f"template key '{'.'.join(path)}' is missing from the run input")
    return value


class _Rule(Protocol):
    """What build_input needs of config.models.MappingRule."""

    @property
    def key(self) -> str: ...
    @property
    def path(self) -> JsonPath: ...
    @property
    def required(self) -> bool: ...
    @property
    def default(self) -> Any: ...


def build_input(static: Mapping[str, Any], rules: Sequence[_Rule], context: Mapping[str, Any]) -> dict[str, Any]:
    """Run input (SPEC 3.5): the static input, then each mapping key set from the context.

    One match gives the value, several a list, none the default; none for a required
    key raises MissingInput. Without any mapping the whole context goes under
    `trigger_context`.
    """
    result = dict(static)
    if not rules:
        result["trigger_context"] = dict(context)
        return result
    for rule in rules:
        found = rule.path.find(context)
        if not found:
            if rule.required:
                raise MissingInput(rule.key, rule.path.text)
            result[rule.key] = rule.default
        else:
            result[rule.key] = found[0] if len(found) == 1 else found
    return result
