"""Agent documents -> Agent models."""

from __future__ import annotations

from typing import Any

from triggerd.config.documents import Document
from triggerd.config.models import (
    AgentType,
    AnthropicAgent,
    AnyAgent,
    CommandAgent,
    HttpAgent,
    Origin,
    Secret,
)
from triggerd.config.triggers import budget, fingerprint
from triggerd.errors import TemplateError
from triggerd.mapping import Template


def _template(doc: Document, pointer: str, text: str) -> Template:
    try:
        return Template.parse(text)
    except TemplateError as exc:
        doc.fail(pointer, str(exc))
        return Template(text, (text,))


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
