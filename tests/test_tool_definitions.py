"""An anthropic agent's `tools` as `validate` checks them (SPEC 5.1): each problem at its file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import AGENT, Write, found, load_dir
from triggerd.config.models import AnthropicAgent, CommandAgent


def caller(tools: str, agent_id: str = "triage") -> str:
    return f"""\
agent:
  id: {agent_id}
  type: anthropic
  model: claude-test-1
  tools:
{tools}"""


WORKER_TOOL = "    - agent: worker\n      input_schema: {type: object}\n"


def test_a_valid_tool_is_resolved_to_its_agent(write: Write, tmp_path: Path) -> None:
    write("a.yaml", caller(WORKER_TOOL) + "  max_turns: 3\n---\n" + AGENT)
    result = load_dir(tmp_path)
    assert found(result) == []
    assert result.configuration is not None
    triage = result.configuration.agents["triage"]
    assert isinstance(triage, AnthropicAgent) and triage.max_turns == 3
    [tool] = triage.tools
    assert isinstance(tool.agent, CommandAgent) and tool.agent.id == "worker"
    assert tool.definition() == {"name": "worker", "description": "", "input_schema": {"type": "object"}}


def test_a_changed_tool_agent_changes_the_callers_fingerprint(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", caller(WORKER_TOOL) + "---\n" + AGENT)
    before = load_dir(tmp_path).configuration
    path.write_text(path.read_text().replace('["cat"]', '["tac"]'))
    after = load_dir(tmp_path).configuration
    assert before is not None and after is not None
    assert before.agents["triage"].fingerprint != after.agents["triage"].fingerprint


def test_a_tool_naming_an_unknown_agent(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", caller("    - agent: wroker\n      input_schema: {type: object}\n") + "---\n" + AGENT)
    result = load_dir(tmp_path)
    assert found(result) == [(str(path), 6, "error", "tool names unknown agent 'wroker'; did you mean 'worker'?")]
    assert result.configuration is not None and "triage" not in result.configuration.agents


def test_a_tool_naming_another_anthropic_agent(write: Write, tmp_path: Path) -> None:
    other = "agent:\n  id: other\n  type: anthropic\n  model: m\n"
    path = write("a.yaml", caller("    - agent: other\n      input_schema: {type: object}\n") + "---\n" + other)
    assert found(load_dir(tmp_path)) == [
        (str(path), 6, "error", "tool 'other' is an anthropic agent; a tool is a command or http agent")
    ]


def test_a_cycle_of_tools_is_named(write: Write, tmp_path: Path) -> None:
    first = caller("    - agent: second\n      input_schema: {type: object}\n", "first")
    second = caller("    - agent: first\n      input_schema: {type: object}\n", "second")
    path = write("a.yaml", first + "---\n" + second + "---\n" + caller(WORKER_TOOL.replace("worker", "self"), "self"))
    assert found(load_dir(tmp_path)) == [
        (str(path), 6, "error", "tools form a cycle: first -> second -> first; a tool is a command or http agent"),
        (str(path), 14, "error", "tools form a cycle: second -> first -> second; a tool is a command or http agent"),
        (str(path), 22, "error", "tools form a cycle: self -> self; a tool is a command or http agent"),
    ]


def test_a_bad_input_schema_is_reported_where_it_is_wrong(write: Write, tmp_path: Path) -> None:
    tools = (
        "    - agent: worker\n      input_schema:\n        type: object\n        properties:\n          n: {type: 12}\n"
    )
    path = write("a.yaml", caller(tools) + "---\n" + AGENT)
    [problem] = found(load_dir(tmp_path))
    assert problem[:3] == (str(path), 10, "error")
    assert problem[3].startswith("input_schema of tool 'worker' is not a valid JSON Schema: 12 is not valid under")


def test_an_input_schema_must_describe_an_object(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", caller("    - agent: worker\n      input_schema: {type: string}\n") + "---\n" + AGENT)
    assert found(load_dir(tmp_path)) == [(str(path), 7, "error", "'string' must be 'object'")]


def test_duplicate_tool_names(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", caller(WORKER_TOOL + WORKER_TOOL) + "---\n" + AGENT)
    assert found(load_dir(tmp_path)) == [
        (str(path), 8, "error", "tool 'worker' is already tool 0 of this agent (tool names are unique)")
    ]


def test_a_tool_agent_that_fails_to_load_is_named(write: Write, tmp_path: Path) -> None:
    broken = write("b.yaml", 'agent:\n  id: worker\n  type: command\n  command: ["x {{ bad key }}"]\n')
    path = write("a.yaml", caller(WORKER_TOOL))
    assert found(load_dir(tmp_path)) == [
        (str(path), 6, "error", f"tool agent 'worker' failed to load ({broken}:1)"),
        (str(broken), 4, "error", "placeholder '{{ bad key }}' is not a dotted path like {{ a.b }}"),
    ]


@pytest.mark.parametrize(
    ("schema", "column", "message"),
    [
        ('{type: object, $schema: "x"}', 45, "names an unknown JSON Schema dialect: 'x'"),
        ('{type: object, $ref: "#/nope"}', 42, "has $ref '#/nope', which names nothing in the input_schema"),
        (
            '{type: object, $ref: "https://schemas.example/x"}',
            42,
            "has $ref 'https://schemas.example/x'; a tool's $ref points inside its own input_schema (#/...)",
        ),
    ],
)
def test_an_input_schema_that_could_not_check_an_input(
    write: Write, tmp_path: Path, schema: str, column: int, message: str
) -> None:
    path = write("a.yaml", caller(f"    - agent: worker\n      input_schema: {schema}\n") + "---\n" + AGENT)
    [problem] = load_dir(tmp_path).problems
    assert (problem.file, problem.line, problem.column) == (str(path), 7, column)
    assert problem.message == f"input_schema of tool 'worker' {message}"


def test_local_references_and_a_known_dialect_are_accepted(write: Write, tmp_path: Path) -> None:
    schema = (
        '{$schema: "http://json-schema.org/draft-07/schema#", type: object, '
        'definitions: {name: {type: string}}, properties: {a: {$ref: "#/definitions/name"}}}'
    )
    write("a.yaml", caller(f"    - agent: worker\n      input_schema: {schema}\n") + "---\n" + AGENT)
    assert found(load_dir(tmp_path)) == []


def test_max_turns_without_tools_is_a_warning(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", "agent:\n  id: solo\n  type: anthropic\n  model: m\n  max_turns: 3\n")
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            5,
            "warning",
            "agent 'solo': max_turns counts the turns of a tool-use loop; without tools it has no effect",
        )
    ]


@pytest.mark.parametrize("agent_id", ["ops.worker", "w" * 65])
def test_a_tool_name_the_messages_api_refuses(write: Write, tmp_path: Path, agent_id: str) -> None:
    # A valid agent id, but not a valid tool name: every call of the agent would be a 400.
    tool = f"    - agent: {agent_id}\n      input_schema: {{type: object}}\n"
    path = write("a.yaml", caller(tool) + "---\n" + AGENT.replace("id: worker", f"id: {agent_id}"))
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            6,
            "error",
            f"tool '{agent_id}': the Messages API takes tool names of 1 to 64 letters, digits, '_' and '-' "
            "(a tool's name is its agent's id)",
        )
    ]
