"""The command agent: a program run without a shell, input on stdin, output from stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable

from triggerd.agents.abc import AgentRequest, AgentResult, parse_output
from triggerd.agents.process_group import KILL_GRACE_SECONDS, end_group, identify
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
    ) -> None:
        self.agent = agent
        self.kill_grace = kill_grace
        self.process_started = process_started

    def environment(self, request: AgentRequest) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED if k in os.environ}
        env.update({k: v.reveal() for k, v in self.agent.env.items()})
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
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.agent.working_dir,
                env=self.environment(request),
                start_new_session=True,  # its own process group, so that one signal reaches every child
            )
        except OSError as exc:
            raise AgentFailure(f"cannot start {argv[0]!r}: {exc.strerror or exc}", retryable=False) from None
        try:
            await self._report(request, process.pid)
            stdout, stderr, overflow = await self._communicate(process, json.dumps(dict(request.input)).encode())
        except BaseException:
            await asyncio.shield(self._terminate(process))
            raise
        tail = stderr[-STDERR_TAIL:].decode("utf-8", "replace").strip()
        output = parse_output(stdout.decode("utf-8", "replace"))
        if overflow:
            await asyncio.shield(self._terminate(process))
            raise AgentFailure(f"output exceeded max_output_bytes ({self.agent.max_output_bytes})", retryable=False)
        if process.returncode != 0:
            detail = f": {tail}" if tail else ""
            raise AgentFailure(
                f"exit status {process.returncode}{detail}",
                retryable=True,
                output=output,
            )
        return AgentResult(output, {"stderr_tail": tail} if tail else None)

    async def _communicate(self, process: asyncio.subprocess.Process, data: bytes) -> tuple[bytes, bytes, bool]:
        limit = self.agent.max_output_bytes

        async def feed() -> None:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.write(data)
                await process.stdin.drain()
            process.stdin.close()

        async def drain_stderr() -> bytes:
            assert process.stderr is not None
            kept = b""
            while chunk := await process.stderr.read(65536):
                kept = (kept + chunk)[-STDERR_TAIL:]
            return kept

        async def read_stdout() -> tuple[bytes, bool]:
            assert process.stdout is not None
            out = bytearray()
            while chunk := await process.stdout.read(65536):
                out += chunk
                if len(out) > limit:
                    return bytes(out[:limit]), True
            return bytes(out), False

        stdin_task = asyncio.ensure_future(feed())
        stderr_task = asyncio.ensure_future(drain_stderr())
        try:
            stdout, overflow = await read_stdout()
            if overflow:
                return stdout, b"", True
            await process.wait()
            return stdout, await stderr_task, False
        finally:
            for task in (stdin_task, stderr_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _report(self, request: AgentRequest, pid: int) -> None:
        """Have the process group recorded before the command gets its input.

        A command that reads its input first does no work before the record is committed; one that
        acts before reading stdin, or a crash between the spawn and the commit, is the window
        in which a killed daemon can still leave it running unrecorded.
        """
        if self.process_started is None:
            return
        group = identify(pid, parent=os.getpid())
        if group is not None:  # None: it already exited and was reaped
            await self.process_started(request, group)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after the grace."""
        await end_group(process.pid, self.kill_grace)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()

    async def close(self) -> None:
        return None
