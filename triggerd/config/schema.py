"""The JSON Schemas shipped in triggerd/schemas, and schema errors turned into Problems."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from triggerd.config.documents import Document, pointer_join
from triggerd.config.problems import Problem


class SchemaKind(StrEnum):
    SETTINGS = "settings"
    TRIGGER = "trigger"
    AGENT = "agent"
    SOURCE = "source"

    @property
    def filename(self) -> str:
        return "triggerd.schema.json" if self is SchemaKind.SETTINGS else f"{self.value}.schema.json"


def schema_text(kind: SchemaKind) -> str:
    return resources.files("triggerd").joinpath("schemas", kind.filename).read_text("utf-8")


@cache
def _validator(kind: SchemaKind) -> Draft202012Validator:
    schema = json.loads(schema_text(kind))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_problems(doc: Document, kind: SchemaKind) -> list[Problem]:
    """Every place where doc.value breaks the schema, one problem each."""
    problems: list[Problem] = []
    for error in _validator(kind).iter_errors(doc.value):
        for leaf in _leaves(error):
            problems.extend(_describe(doc, leaf))
    return problems


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors worth reporting: for anyOf/oneOf, the branch that came closest."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        deeper = [e for e in error.context if len(e.absolute_path) > len(error.absolute_path)]
        if deeper:
            yield from _leaves(best_match(deeper))
            return
        if error.validator == "anyOf":
            yield error
            return
        yield from _leaves(best_match(error.context))
        return
    yield error


def _pointer(error: ValidationError, root: Any) -> str:
    pointer, parent = "", root
    for part in error.absolute_path:
        pointer = pointer_join(pointer, part)
        parent = parent[part]
    if error.validator is None and isinstance(parent, dict):
        # jsonschema reports a `false` subschema at the parent: find the key it refused.
        for key, value in parent.items():
            if value is error.instance:
                return pointer_join(pointer, key)
    return pointer


def _type_name(value: Any) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _describe(doc: Document, error: ValidationError) -> Iterator[Problem]:
    pointer = _pointer(error, doc.value)
    value = error.instance
    shown = doc.shown(pointer, value)
    kind = error.validator
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    expected: Any = error.validator_value
    if kind in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_allowed_keys(schema, value))
        unknown = [k for k in value if k not in allowed] if isinstance(value, dict) else []
        for key in unknown:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            yield doc.problem(pointer_join(pointer, key), f"unknown key '{key}'{suggestion}", key=True)
        # With no unknown key, the properties were left "unevaluated" only because their
        # branch failed elsewhere; that failure is reported on its own.
        return
    elif kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        message = f"missing required key '{missing}'"
    elif kind is None:
        yield doc.problem(pointer, f"'{pointer.rsplit('/', 1)[-1]}' is not allowed with this type", key=True)
        return
    elif kind == "enum" and pointer.endswith("/operator"):
        message = f"unknown condition operator {shown} (expected one of: {', '.join(expected)})"
    elif kind == "enum":
        message = f"{shown} is not one of: {', '.join(str(v) for v in expected)}"
    elif kind == "const":
        message = f"{shown} must be {expected!r}"
    elif kind == "type":
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        message = f"expected {expected}, got {_type_name(value)} {shown}"
    elif kind == "pattern":
        message = f"{shown} does not match the required form {expected!r}"
    elif kind == "anyOf":
        message = f"{shown} is not valid here: {schema.get('description', error.message)}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        message = f"{shown} must be {bound} {expected}"
    elif kind == "minItems":
        message = f"needs at least {expected} item(s)"
    elif kind == "minLength":
        message = "must not be empty"
    else:
        message = error.message if pointer not in doc.substituted else f"{shown} is not valid ({kind})"
    yield doc.problem(pointer, message)


def _allowed_keys(schema: dict[str, Any], value: Any) -> set[str]:
    """Keys the schema allows for this value, counting the if/then branches that apply."""
    keys = set(schema.get("properties", {}))
    kind = value.get("type") if isinstance(value, dict) else None
    for sub in schema.get("allOf", []):
        condition = sub.get("if", {}).get("properties", {}).get("type", {})
        if condition.get("const") == kind:
            keys |= {k for k, v in sub.get("then", {}).get("properties", {}).items() if v is not False}
    return keys
