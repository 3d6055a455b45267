"""Agent backends behind one contract (abc.py), built from agent definitions."""

from __future__ import annotations

from collections.abc import Callable

from triggerd.agents.abc import AgentBackend
from triggerd.agents.child import Spawner
from triggerd.agents.command import CommandBackend, ProcessStarted
from triggerd.agents.http import HttpBackend
from triggerd.config.models import AnthropicAgent, AnyAgent, CommandAgent


def build_backend(
    agent: AnyAgent,
    process_started: ProcessStarted | None,
    backends: Callable[[AnyAgent], AgentBackend],
    spawner: Spawner | None = None,
) -> AgentBackend:
    """The backend of a definition; a command backend tells `process_started` of each process group it starts.

    An anthropic agent's tools run on `backends` (the pool's: a tool agent has one backend,
    whether a trigger runs it or a model calls it).
    """
    if isinstance(agent, CommandAgent):
        return CommandBackend(agent, process_started=process_started, spawner=spawner)
    if isinstance(agent, AnthropicAgent):
        # The SDK takes about two seconds to import: only configurations that use it pay for it.
        from triggerd.agents.anthropic_messages import AnthropicBackend

        return AnthropicBackend(agent, backends)
    return HttpBackend(agent)


class AgentPool:
    """One backend per agent definition, reused across runs, rebuilt when the definition changes."""

    def __init__(self, process_started: ProcessStarted | None = None) -> None:
        self._backends: dict[tuple[str, str], AgentBackend] = {}
        self.process_started = process_started
        self.spawner = Spawner()  # one process starting every command of this daemon (agents/child.py)

    def backend(self, agent: AnyAgent) -> AgentBackend:
        key = (agent.id, agent.fingerprint)
        if key not in self._backends:
            self._backends[key] = build_backend(agent, self.process_started, self.backend, self.spawner)
        return self._backends[key]

    async def close(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await backend.close()
        await self.spawner.close()
