"""Agent documents -> Agent models."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from triggerd.config.documents import Document
from triggerd.config.models import (
    DEFAULT_MAX_TURNS,
    AgentType,
    AnthropicAgent,
    AnyAgent,
    CommandAgent,
    HttpAgent,
    Origin,
    Secret,
    Tool,
)
from triggerd.config.triggers import budget, fingerprint
from triggerd.errors import TemplateError
from triggerd.mapping import Template

# The Messages API's rule for a tool's name, which is the tool agent's id: ids may also hold '.'
# and be longer, and such a tool would make every call of its agent fail with a 400.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _template(doc: Document, pointer: str, text: str) -> Template:
    try:
        return Template.parse(text)
    except TemplateError as exc:
        doc.fail(pointer, str(exc))
        return Template(text, (text,))


def _tools(doc: Document, items: list[dict[str, Any]]) -> tuple[Tool, ...]:
    """An anthropic agent's tools as written (SPEC 5.1); the loader resolves the agents they name.

    Each input_schema must itself be a valid JSON Schema: the model's input is checked
    against it before a tool runs, and a schema that cannot check anything would let it all through.
    """
    tools: list[Tool] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        pointer = f"/agent/tools/{index}"
        name, schema = item["agent"], item["input_schema"]
        if name in seen:
            doc.fail(
                f"{pointer}/agent", f"tool '{name}' is already tool {seen[name]} of this agent (tool names are unique)"
            )
        seen.setdefault(name, index)
        if not TOOL_NAME.fullmatch(name):
            doc.fail(
                f"{pointer}/agent",
                f"tool '{name}': the Messages API takes tool names of 1 to 64 letters, digits, '_' and '-' "
                "(a tool's name is its agent's id)",
            )
        for where, message in _schema_problems(schema):
            doc.fail(f"{pointer}/input_schema{where}", f"input_schema of tool '{name}' {message}")
        tools.append(Tool(name, item.get("description"), schema))
    return tuple(tools)


def _schema_problems(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """(pointer inside the schema, message) for what makes `schema` unable to check a tool input.

    Its `$schema`, when given, must name a dialect jsonschema knows; the schema must be valid
    under it; and every `$ref` must point inside the schema itself: nothing is ever fetched to
    check what a model sent, and a reference to nothing would fail every call.
    """
    dialect = schema.get("$schema")
    # validator_for returns `default` for a dialect it does not know (typed as a validator class; any value works).
    if dialect is not None and (
        not isinstance(dialect, str) or jsonschema.validators.validator_for(schema, default=None) is None  # type: ignore[arg-type]
    ):
        return [("/$schema", f"names an unknown JSON Schema dialect: {dialect!r}")]
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [("".join(f"/{part}" for part in exc.path), f"is not a valid JSON Schema: {exc.message}")]
    return [(where, message) for where, ref in _references(schema, "") if (message := _unresolved(schema, ref))]


def _references(node: Any, where: str) -> list[tuple[str, str]]:
    """Every string `$ref` in a schema, with its pointer."""
    if isinstance(node, list):
        return [found for i, item in enumerate(node) for found in _references(item, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    found = [(f"{where}/$ref", node["$ref"])] if isinstance(node.get("$ref"), str) else []
    for key, value in node.items():
        escaped = key.replace("~", "~0").replace("/", "~1")
        found.extend(_references(value, f"{where}/{escaped}"))
    return found


def _unresolved(schema: dict[str, Any], ref: str) -> str | None:
    """Why `$ref: ref` does not name a place inside `schema`, or None when it does."""
    if ref != "#" and not ref.startswith("#/"):
        return f"has $ref {ref!r}; a tool's $ref points inside its own input_schema (#/...)"
    node: Any = schema
    for part in ref[2:].split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return f"has $ref {ref!r}, which names nothing in the input_schema"
    return None


def build_agent(doc: Document, agent_id: str) -> AnyAgent | None:
    """The Agent of a schema-valid document, or None when a check failed (see doc.problems)."""
    a: dict[str, Any] = doc.value["agent"]
    mark = doc.mark("/agent", key=True)
    common: dict[str, Any] = {
        "id": agent_id,
        "name": a.get("name"),
        "description": a.get("description"),
        "type": AgentType(a["type"]),
        "max_concurrent": a.get("max_concurrent"),
        "timeout_seconds": float(a["timeout_seconds"]) if "timeout_seconds" in a else None,
        "origin": Origin(doc.file, mark.line, mark.column),
        "fingerprint": fingerprint(doc),
        "budget": budget(a.get("budget")),
    }
    agent: AnyAgent
    if common["type"] is AgentType.ANTHROPIC:
        prompt = a.get("prompt")
        api_key = a.get("api_key")
        agent = AnthropicAgent(
            **common,
            model=a["model"],
            system=a.get("system"),
            prompt=_template(doc, "/agent/prompt", prompt) if prompt is not None else None,
            max_tokens=a.get("max_tokens", 1024),
            temperature=a.get("temperature"),
            params=a.get("params", {}),
            api_key=Secret(api_key) if api_key else None,
            base_url=a.get("base_url"),
            tools=_tools(doc, a.get("tools", [])),
            max_turns=a.get("max_turns", DEFAULT_MAX_TURNS),
        )
        if "max_turns" in a and not agent.tools:
            doc.warn(
                "/agent/max_turns",
                f"agent '{agent_id}': max_turns counts the turns of a tool-use loop; without tools it has no effect",
            )
    elif common["type"] is AgentType.COMMAND:
        agent = CommandAgent(
            **common,
            command=tuple(_template(doc, f"/agent/command/{i}", arg) for i, arg in enumerate(a["command"])),
            working_dir=a.get("working_dir"),
            env={k: Secret(v) for k, v in a.get("env", {}).items()},
            max_output_bytes=a.get("max_output_bytes", 1_048_576),
            allow_option_args=a.get("option_args") == "allow",
        )
        if not agent.allow_option_args:
            for index in agent.exposed_arguments():
                doc.warn(
                    f"/agent/command/{index}",
                    f"agent '{agent_id}': argument {index} ({agent.command[index].text}) can render to a value "
                    "that starts with '-' and becomes an option; put \"--\" before it in the command, "
                    "or set option_args: allow",
                )
    else:
        agent = HttpAgent(
            **common,
            url=a["url"],
            method=a.get("method", "POST"),
            headers={k: Secret(v) for k, v in a.get("headers", {}).items()},
        )
    return None if doc.has_errors else agent
