"""Who may start now: the global, per-agent and per-trigger caps on running runs."""

from __future__ import annotations

from collections import Counter

from triggerd.config.models import AnyAgent, Trigger
from triggerd.dispatch.queue import Verdict


class RunningCounts:
    """Counts of running runs, overall and by trigger and agent."""

    def __init__(self, global_limit: int) -> None:
        self.global_limit = global_limit
        self.total = 0
        self.by_trigger: Counter[str] = Counter()
        self.by_agent: Counter[str] = Counter()

    @property
    def full(self) -> bool:
        return self.total >= self.global_limit

    def verdict(self, trigger: Trigger, agent: AnyAgent) -> Verdict:
        """Whether a run of this trigger and agent may start now, and if not, which limit holds it."""
        if self.full:
            return Verdict.GLOBAL_FULL
        if agent.max_concurrent is not None and self.by_agent[agent.id] >= agent.max_concurrent:
            return Verdict.AGENT_FULL
        if self.by_trigger[trigger.id] >= trigger.max_concurrent:
            return Verdict.TRIGGER_FULL
        return Verdict.START

    def add(self, trigger: Trigger, agent: AnyAgent) -> None:
        self.total += 1
        self.by_trigger[trigger.id] += 1
        self.by_agent[agent.id] += 1

    def remove(self, trigger: Trigger, agent: AnyAgent) -> None:
        self.total -= 1
        self.by_trigger[trigger.id] -= 1
        self.by_agent[agent.id] -= 1
