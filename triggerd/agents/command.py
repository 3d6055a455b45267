"""The command agent: a program run without a shell, input on stdin, output from stdout."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable

from triggerd.agents.abc import AgentRequest, AgentResult, parse_output
from triggerd.agents.child import Child, Spawner
from triggerd.agents.process_group import KILL_GRACE_SECONDS, end_group
from triggerd.config.models import CommandAgent
from triggerd.errors import AgentFailure, TemplateError
from triggerd.runs import ProcessGroup

STDERR_TAIL = 4096
# The daemon's own environment may hold secrets (API keys, tokens): a command gets
# only these from it, plus what its definition's `env` names.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")

# Told of each command's process group once it started, so that the dispatcher can record it (SPEC 5.2).
ProcessStarted = Callable[[AgentRequest, ProcessGroup], Awaitable[None]]


class CommandBackend:
    def __init__(
        self,
        agent: CommandAgent,
        kill_grace: float = KILL_GRACE_SECONDS,
        process_started: ProcessStarted | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        self.agent = agent
        self.kill_grace = kill_grace
        self.process_started = process_started
        self.spawner = spawner  # None: commands start in this process
        self._environment: dict[str, str] | None = None

    def environment(self, request: AgentRequest) -> dict[str, str]:
        if self._environment is None:  # the daemon's part and the definition's: the same for every run
            self._environment = {k: os.environ[k] for k in INHERITED if k in os.environ}
            self._environment.update({k: v.reveal() for k, v in self.agent.env.items()})
        env = dict(self._environment)
        env.update(
            TRIGGERD_RUN_ID=request.run_id,
            TRIGGERD_TRIGGER_ID=request.trigger_id,
            TRIGGERD_AGENT_ID=request.agent_id,
            TRIGGERD_ATTEMPT=str(request.attempt),
        )
        return env

    def argv(self, request: AgentRequest) -> list[str]:
        """The rendered arguments; AgentFailure (not retryable) for a missing key or, unless the
        agent sets option_args: allow, a placeholder that made an argument start with '-' (SPEC 5.1)."""
        try:
            argv = [template.render(request.input) for template in self.agent.command]
        except TemplateError as exc:
            raise AgentFailure(str(exc), retryable=False) from None
        for index, arg in enumerate(argv):
            if "\0" in arg:  # exec cannot pass it: say so, rather than fail as an internal error
                raise AgentFailure(f"argument {index} of the command contains a NUL character", retryable=False)
        if not self.agent.allow_option_args:
            for index in self.agent.exposed_arguments():
                if argv[index].startswith("-"):
                    raise AgentFailure(
                        f"argument {index} of the command ({self.agent.command[index].text}) starts with '-' "
                        'after rendering and would be read as an option; put "--" before it in the command, '
                        "or set option_args: allow",
                        retryable=False,
                    )
        return argv

    async def run(self, request: AgentRequest) -> AgentResult:
        argv = self.argv(request)
        try:
            cwd, env = self.agent.working_dir, self.environment(request)
            if self.spawner is not None:
                child = await self.spawner.start(argv, cwd=cwd, env=env)
            else:
                child = Child.start_here(argv, cwd=cwd, env=env)
        except OSError as exc:
            raise AgentFailure(f"cannot start {argv[0]!r}: {exc.strerror or exc}", retryable=False) from None
        try:
            await self._report(request, child)
            output = await child.communicate(
                json.dumps(dict(request.input)).encode(), self.agent.max_output_bytes, STDERR_TAIL
            )
        except BaseException:
            await asyncio.shield(self._terminate(child))
            raise
        if output.overflow:
            await asyncio.shield(self._terminate(child))
            raise AgentFailure(f"output exceeded max_output_bytes ({self.agent.max_output_bytes})", retryable=False)
        tail = output.stderr_tail.decode("utf-8", "replace").strip()
        parsed = parse_output(output.stdout.decode("utf-8", "replace"))
        if child.returncode != 0:
            detail = f": {tail}" if tail else ""
            raise AgentFailure(f"exit status {child.returncode}{detail}", retryable=True, output=parsed)
        return AgentResult(parsed, {"stderr_tail": tail} if tail else None)

    async def _report(self, request: AgentRequest, child: Child) -> None:
        """Have the process group recorded before the command gets its input.

        A command that reads its input first does no work before the record is committed; one that
        acts before reading stdin, or a crash between the spawn and the commit, is the window
        in which a killed daemon can still leave it running unrecorded.
        """
        if self.process_started is None:
            return
        group = child.identity()
        if group is not None:  # None: it already exited and was reaped
            await self.process_started(request, group)

    async def _terminate(self, child: Child) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after the grace."""
        child.close()
        await end_group(child.pid, self.kill_grace)
        await child.wait()

    async def close(self) -> None:
        return None
