"""The agent contract: one attempt of one run, given its input, returns an output or fails.

Rules every backend keeps:

- `run` returns an AgentResult on success and raises AgentFailure on failure,
  saying whether a retry could help (`retryable`). It never retries by itself:
  the dispatcher's retry policy is the only one.
- Time limits and cancellation come from outside, as asyncio cancellation. A
  backend must leave nothing behind when cancelled (a command's whole process
  group is gone before `run` re-raises) and must not swallow the cancellation.
- A template that names a key missing from the input is AgentFailure with
  retryable=False: the same input would fail the same way.
- Secrets (API keys, header values, env values) never appear in errors.
- What an attempt did on the way (tool calls, tokens spent) goes into the request's
  Transcript as it happens, so that an attempt that fails, times out or is cancelled
  still leaves its steps and usage to record.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Lists and objects inside an agent's output or a model's tool input. A command, an endpoint, a
# model (a prompt-injected one, say) or a tool relaying someone else's JSON can nest without end;
# the SDK stops serialising at about 250 levels and the recursive copies and masking of a record
# at about 400, so a bound well under both keeps a run and its record whole. No real output comes
# near it.
MAX_DEPTH = 64


@dataclass(slots=True)
class Transcript:
    """An attempt's record as it goes: `steps` (tool calls, SPEC 5.1) and `usage` summed over turns.

    `keep`, when set, is handed the steps whenever they change (the dispatcher stores them).
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    keep: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None

    async def kept(self) -> None:
        if self.keep is not None:
            await self.keep(self.steps)


@dataclass(frozen=True, slots=True)
class AgentRequest:
    run_id: str
    trigger_id: str
    agent_id: str
    attempt: int
    input: Mapping[str, Any]
    transcript: Transcript = field(default_factory=Transcript, compare=False)


@dataclass(frozen=True, slots=True)
class AgentResult:
    output: Any
    usage: Mapping[str, Any] | None = None


class AgentBackend(Protocol):
    async def run(self, request: AgentRequest) -> AgentResult:
        """Perform one attempt; raise AgentFailure when it fails."""
        ...

    async def close(self) -> None:
        """Release clients and sessions; called once, at shutdown or when the agent is replaced."""
        ...


def parse_output(text: str) -> Any:
    """An agent's output (SPEC 5.1): parsed when it is JSON nested at most MAX_DEPTH deep, else the text."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return text if nested_deeper(value, MAX_DEPTH) else value


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether a JSON-like value has lists or objects nested more than `limit` deep.

    Iterative, so that it never meets the recursion limit the value itself may be built to reach.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
