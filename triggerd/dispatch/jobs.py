"""A run this daemon claimed (Job), and what one attempt of it came to (Outcome)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from triggerd.config.models import AnyAgent, Trigger
from triggerd.runs import RunStatus


@dataclass(eq=False)
class Job:
    """A run this daemon claimed, with the definitions it runs under (fixed when it was claimed)."""

    run_id: str
    trigger: Trigger
    agent: AnyAgent
    input: Mapping[str, Any]
    attempt: int  # the number of the attempt the claim started
    failures: int = 0
    started_at: str | None = None  # the run's first start, for the duration metric
    task: asyncio.Task[None] | None = None
    attempt_task: asyncio.Task[Any] | None = None
    cancel_reason: str | None = None
    lost: bool = False  # the lease was lost: another daemon records this attempt, not this one
    ending: int = 0  # what Admission.ending gave when its end began to be recorded (0: not yet)
    ended: bool = False  # its end (completed, failed, timed out, cancelled) is recorded: it runs no more
    chain_depth: int = 0
    log_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_extra = {"run_id": self.run_id, "trigger_id": self.trigger.id, "agent_id": self.agent.id}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: RunStatus
    output: Any = None
    usage: Any = None
    error: str | None = None
    retryable: bool = False
    reason: str | None = None
    steps: Any = None
