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

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


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
