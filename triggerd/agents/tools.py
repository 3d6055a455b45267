"""An anthropic agent's tools (SPEC 5.1): the model's tool_use blocks run as agents, as tool_result blocks.

A tool is another agent (command or http). Its input is the model's tool input, checked
against the tool's input_schema before anything runs; it runs on the same backend as a run of
that agent would (no shell, its process group ended on timeout or cancel, output limits),
inside the calling attempt's time limit, and within the tool agent's own timeout_seconds.
A failure of any kind is an `is_error` result for the model to act on, never the run's end:
the model's next turn decides. Every call becomes a step of the attempt's Transcript as it
starts, so that a call cut short by a timeout or a cancel is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import jsonschema

from triggerd.agents.abc import AgentBackend, AgentRequest
from triggerd.clock import isoformat
from triggerd.config.models import AnyAgent, Tool
from triggerd.errors import AgentFailure
from triggerd.masking import dumps, mask

log = logging.getLogger("triggerd.agents")


class ToolError(Exception):
    """A tool call that produced no output: its message goes back to the model as an error."""


class ToolBox:
    """The tools of one anthropic agent: their definitions for the model, and the calls themselves."""

    def __init__(self, tools: Sequence[Tool], backends: Callable[[AnyAgent], AgentBackend]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.backends = backends
        self._validators = {
            tool.name: jsonschema.validators.validator_for(tool.input_schema)(tool.input_schema) for tool in tools
        }

    async def call(self, request: AgentRequest, turn: int, use_id: str, name: str, tool_input: Any) -> dict[str, Any]:
        """Run one tool_use block; return its tool_result block. Cancellation passes through."""
        step: dict[str, Any] = {"turn": turn, "tool": name, "input": tool_input, "started_at": _now()}
        request.transcript.steps.append(step)
        await request.transcript.kept()  # on record before it runs: a crash during the call leaves it there
        extra = {"run_id": request.run_id, "trigger_id": request.trigger_id, "agent_id": request.agent_id}
        try:
            output = await self._run(request, name, tool_input)
        except ToolError as exc:
            step.update(error=str(exc), finished_at=_now())
            await request.transcript.kept()
            log.warning("tool call %s (turn %d) failed: %s", name, turn, mask(str(exc)), extra=extra)
            return {"type": "tool_result", "tool_use_id": use_id, "content": mask(str(exc)), "is_error": True}
        except asyncio.CancelledError:
            step.update(error="cancelled: the run's attempt ended during this call", finished_at=_now())
            log.info("tool call %s (turn %d) cancelled", name, turn, extra=extra)
            raise
        step.update(output=output, finished_at=_now())
        await request.transcript.kept()
        log.info("tool call %s (turn %d) completed", name, turn, extra=extra)
        content = output if isinstance(output, str) else dumps(output)
        return {"type": "tool_result", "tool_use_id": use_id, "content": mask(content) or "(no output)"}

    async def _run(self, request: AgentRequest, name: str, tool_input: Any) -> Any:
        tool = self.tools.get(name)
        if tool is None or tool.agent is None:
            raise ToolError(f"unknown tool '{name}'; the tools are: {', '.join(self.tools)}")
        try:
            problems = sorted(self._validators[name].iter_errors(tool_input), key=lambda e: list(map(str, e.path)))
        except Exception as exc:  # a $ref that resolves to nothing (remote ones are never fetched): run nothing
            raise ToolError(f"the input_schema of tool '{name}' cannot check this input: {exc}") from None
        if problems:
            shown = "; ".join(f"{p.message} (at /{'/'.join(map(str, p.path))})" for p in problems[:5])
            raise ToolError(f"input does not match the input_schema of tool '{name}': {shown}")
        agent = tool.agent
        call = AgentRequest(request.run_id, request.trigger_id, agent.id, request.attempt, tool_input)
        try:
            async with asyncio.timeout(agent.timeout_seconds):
                result = await self.backends(agent).run(call)
        except TimeoutError:
            raise ToolError(f"tool '{name}' timed out after {agent.timeout_seconds:g}s") from None
        except AgentFailure as failure:
            raise ToolError(f"tool '{name}' failed: {failure.message}") from None
        except Exception as exc:  # a backend bug ends this call, not the run
            log.exception("tool backend raised", extra={"run_id": request.run_id, "agent_id": agent.id})
            raise ToolError(f"tool '{name}' failed: internal error: {exc.__class__.__name__}") from None
        return result.output


def add_usage(total: Mapping[str, Any] | None, turn: Mapping[str, Any]) -> dict[str, Any]:
    """Usage summed over turns: numbers added (nested ones too, as in cache_creation), the rest the latest."""
    summed = dict(total or {})
    for key, value in turn.items():
        before = summed.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
            summed[key] = value
        elif isinstance(value, dict):
            summed[key] = add_usage(before if isinstance(before, dict) else None, value)
        else:
            summed[key] = value + before if isinstance(before, (int, float)) and not isinstance(before, bool) else value
    return summed


def _now() -> str:
    return isoformat(datetime.now(UTC))
