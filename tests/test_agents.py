"""Agent backends against real processes and a real HTTP server on loopback (SPEC 5.1)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.harness import free_port, pid_alive, processes_with
from triggerd.agents import child as child_module
from triggerd.agents.abc import AgentRequest
from triggerd.agents.child import Child, Spawner
from triggerd.agents.command import CommandBackend
from triggerd.agents.http import HttpBackend
from triggerd.agents.process_group import identify
from triggerd.config.models import AgentType, CommandAgent, HttpAgent, Origin, Secret
from triggerd.errors import AgentFailure
from triggerd.mapping import Template
from triggerd.runs import ProcessGroup

REQUEST = AgentRequest("run-1", "trig", "agent", 2, {"name": "Ada"})
COMMON: dict[str, Any] = {
    "name": None,
    "description": None,
    "max_concurrent": None,
    "timeout_seconds": None,
    "origin": Origin("x.yaml", 1),
    "fingerprint": "f",
}


def command(*argv: str, max_output: int = 1_048_576, cwd: Path | None = None) -> CommandAgent:
    return CommandAgent(
        id="c",
        type=AgentType.COMMAND,
        command=tuple(Template.parse(a) for a in argv),
        working_dir=str(cwd) if cwd else None,
        env={"FROM_DEF": Secret("yes")},
        max_output_bytes=max_output,
        **COMMON,
    )


def test_output_beyond_the_limit_fails_the_run_and_stops_the_command() -> None:
    agent = command(
        sys.executable,
        "-c",
        "import sys, time; sys.stdout.write('x' * 100000); sys.stdout.flush(); time.sleep(30)",
        max_output=1000,
    )
    started = time.monotonic()
    with pytest.raises(AgentFailure) as failure:
        asyncio.run(CommandBackend(agent, kill_grace=0.5).run(REQUEST))
    assert str(failure.value) == "output exceeded max_output_bytes (1000)"
    assert failure.value.retryable is False
    assert time.monotonic() - started < 5


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    script = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open('pid', 'w').write(str(os.getpid())); time.sleep(60)"
    )
    backend = CommandBackend(command(sys.executable, "-c", script, cwd=tmp_path), kill_grace=0.5)

    async def scenario() -> float:
        task = asyncio.create_task(backend.run(REQUEST))
        while not (tmp_path / "pid").exists():  # noqa: ASYNC110 - a file written by another process
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert 0.4 < elapsed < 3  # waited the grace, then SIGKILL
    assert not pid_alive(int((tmp_path / "pid").read_text()))


def test_stderr_tail_and_exit_status_are_reported() -> None:
    agent = command(sys.executable, "-c", "import sys; sys.stderr.write('a' * 5000 + 'END'); sys.exit(4)")
    with pytest.raises(AgentFailure) as failure:
        asyncio.run(CommandBackend(agent).run(REQUEST))
    assert failure.value.retryable is True
    assert failure.value.message.startswith("exit status 4: aaa")
    assert failure.value.message.endswith("END")
    assert len(failure.value.message) < 4200


def test_an_input_larger_than_the_pipe_reaches_the_command_whole() -> None:
    """The input is written as the pipe drains (a pipe holds 64 KiB): the command reads all of it."""
    big = AgentRequest("run-1", "trig", "agent", 1, {"text": "y" * 1_000_000})
    script = "import hashlib, sys; data = sys.stdin.buffer.read(); print(len(data), hashlib.sha256(data).hexdigest())"
    result = asyncio.run(CommandBackend(command(sys.executable, "-c", script)).run(big))
    sent = json.dumps(dict(big.input)).encode()
    assert result.output == f"{len(sent)} {hashlib.sha256(sent).hexdigest()}\n"


def test_a_command_that_never_reads_a_large_input_still_ends_with_its_output() -> None:
    """Its stdin closes unread (a broken pipe on our side): the run goes on to its exit and output."""
    big = AgentRequest("run-1", "trig", "agent", 1, {"text": "y" * 1_000_000})
    result = asyncio.run(CommandBackend(command(sys.executable, "-c", "print('[1, 2]')")).run(big))
    assert result.output == [1, 2]


def test_a_large_output_is_read_whole() -> None:
    script = "import sys; sys.stdout.write('z' * 300000)"
    result = asyncio.run(CommandBackend(command(sys.executable, "-c", script)).run(REQUEST))
    assert result.output == "z" * 300000


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("where", ["spawner", "daemon"])
def test_the_identity_of_a_started_command_matches_what_proc_says(where: str) -> None:
    """The start time taken from the clock around the spawn (issue 17) is the one /proc records,
    so that a restart after a crash recognises the process group (SPEC 5.2)."""

    async def identities() -> list[tuple[ProcessGroup | None, ProcessGroup | None]]:
        spawner, pairs = Spawner(), []
        env = {"PATH": os.environ["PATH"]}
        for _ in range(50):
            if where == "spawner":
                child = await spawner.start(["sleep", "5"], cwd=None, env=env)
            else:
                child = Child.start_here(["sleep", "5"], cwd=None, env=env)
            parent = os.getpid() if where == "daemon" else parent_of(child.pid)
            assert (parent == os.getpid()) is (where == "daemon")
            pairs.append((child.identity(), identify(child.pid, parent=parent)))
            os.kill(child.pid, signal.SIGKILL)
            child.close()
            assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL
            assert child.identity() is None  # reaped: nothing to record
        await spawner.close()
        return pairs

    for ours, proc in asyncio.run(identities()):
        assert ours is not None
        assert ours == proc


def spawned(agent: CommandAgent, request: AgentRequest = REQUEST) -> Any:
    """The output of one run of the agent, its command started by a spawner process."""

    async def run() -> Any:
        spawner = Spawner()
        try:
            return (await CommandBackend(agent, spawner=spawner).run(request)).output
        finally:
            await spawner.close()

    return asyncio.run(run())


def test_a_spawned_command_holds_its_three_pipes_only_and_default_signals(tmp_path: Path) -> None:
    """What the spawner starts gets no descriptor of the daemon's or the spawner's, and none of the
    signals the spawner ignores stays ignored (SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGXFSZ): the same
    as a command started by Popen in the daemon."""
    listing = command("ls", "/proc/self/fd", cwd=tmp_path)
    status = command("cat", "/proc/self/status", cwd=tmp_path)
    assert spawned(listing).split() == ["0", "1", "2", "3"]  # 3: the folder ls reads

    def ignored(status: str) -> list[int]:
        mask = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        return [
            s
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ)
            if mask >> (s - 1) & 1
        ]

    assert ignored(spawned(status)) == []
    assert ignored(asyncio.run(CommandBackend(status).run(REQUEST)).output) == []
    assert spawned(command("pwd", cwd=tmp_path)).strip() == str(tmp_path)


def test_a_spawned_command_finds_its_program_as_exec_would(tmp_path: Path) -> None:
    """On the PATH of its own environment; a name with a '/' from its working_dir; a missing
    or unexecutable program is the error exec would give."""
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho '\"hi\"'\n")
    script.chmod(0o755)
    assert spawned(command("./hello.sh", cwd=tmp_path)) == "hi"
    (tmp_path / "plain").write_text("not a program")
    with pytest.raises(AgentFailure, match=r"cannot start './plain': Permission denied"):
        spawned(command("./plain", cwd=tmp_path))
    with pytest.raises(AgentFailure, match=r"cannot start 'no-such-program-here': No such file or directory"):
        spawned(command("no-such-program-here"))
    big = "y" * 100_000  # a command line longer than one request to the spawner: started in the daemon
    assert spawned(command(sys.executable, "-c", f"print(len('{big}'))")) == 100_000


def test_a_spawner_that_dies_is_started_again() -> None:
    """Its running command's exit is then unknown (-1, a failed attempt, logged); the next command
    starts through a new spawner."""

    async def scenario() -> tuple[int, int, int]:
        spawner = Spawner()
        env = {"PATH": os.environ["PATH"]}
        try:
            first = await spawner.start(["sleep", "30"], cwd=None, env=env)
            helper = parent_of(first.pid)
            os.kill(helper, signal.SIGKILL)
            code = await asyncio.wait_for(first.wait(), 5)
            os.killpg(first.pid, signal.SIGKILL)
            first.close()
            second = await spawner.start(["sleep", "0.2"], cwd=None, env=env)
            again = parent_of(second.pid)  # it runs for 0.2 s: its parent is the new spawner
            await asyncio.wait_for(second.communicate(b"", 100, 100), 5)
            return code, helper, again
        finally:
            await spawner.close()

    code, helper, again = asyncio.run(scenario())
    assert code == -1
    assert again != helper


def test_the_command_environment_is_minimal_and_names_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "daemon-secret")
    script = "import json, os; print(json.dumps(dict(os.environ)))"
    result = asyncio.run(CommandBackend(command(sys.executable, "-c", script)).run(REQUEST))
    env = result.output
    assert "ANTHROPIC_API_KEY" not in env
    assert (env["FROM_DEF"], env["TRIGGERD_RUN_ID"], env["TRIGGERD_ATTEMPT"]) == ("yes", "run-1", "2")


class Endpoint:
    """A real HTTP endpoint on loopback answering from a list of (status, body)."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.received: list[tuple[dict[str, str], Any]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.json()))
        status, body = self.answers.pop(0)
        if body == "hang":
            await asyncio.sleep(30)
        return web.Response(status=status, text=body if isinstance(body, str) else json.dumps(body))

    async def __aenter__(self) -> HttpBackend:
        app = web.Application()
        app.router.add_post("/run", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.backend = HttpBackend(
            HttpAgent(
                id="h",
                type=AgentType.HTTP,
                url=f"http://127.0.0.1:{self.port}/run",
                method="POST",
                headers={"Authorization": Secret("Bearer t0k")},
                **COMMON,
            )
        )
        return self.backend

    async def __aexit__(self, *exc: object) -> None:
        await self.backend.close()
        await self.runner.cleanup()


def test_http_agent_posts_the_run_and_keeps_the_answer() -> None:
    endpoint = Endpoint([(200, {"done": True})])

    async def scenario() -> Any:
        async with endpoint as backend:
            return (await backend.run(REQUEST)).output

    assert asyncio.run(scenario()) == {"done": True}
    headers, body = endpoint.received[0]
    assert body == {
        "run_id": "run-1",
        "trigger_id": "trig",
        "agent_id": "agent",
        "attempt": 2,
        "input": {"name": "Ada"},
    }
    assert headers["Authorization"] == "Bearer t0k"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (429, True), (500, True), (503, True)])
def test_http_agent_failures_say_whether_to_retry(status: int, retryable: bool) -> None:
    endpoint = Endpoint([(status, "nope")])

    async def scenario() -> AgentFailure:
        async with endpoint as backend:
            with pytest.raises(AgentFailure) as failure:
                await backend.run(REQUEST)
            return failure.value

    failure = asyncio.run(scenario())
    assert (failure.retryable, failure.output) == (retryable, "nope")
    assert failure.message == f"POST http://127.0.0.1:{endpoint.port} answered {status}"  # no path (SPEC 2.3)


def test_http_agent_unreachable_endpoint_is_retryable() -> None:
    agent = HttpAgent(
        id="h", type=AgentType.HTTP, url=f"http://127.0.0.1:{free_port()}/run", method="POST", headers={}, **COMMON
    )

    async def scenario() -> AgentFailure:
        backend = HttpBackend(agent)
        try:
            with pytest.raises(AgentFailure) as failure:
                await backend.run(REQUEST)
            return failure.value
        finally:
            await backend.close()

    assert asyncio.run(scenario()).retryable is True


def test_a_burst_of_starts_larger_than_the_spawners_socket_waits_and_all_start() -> None:
    """300 starts at once with 20 KiB environments (6 MiB of requests) fill the socket to the
    spawner: the daemon waits for room instead of failing them."""

    async def burst() -> list[int]:
        spawner = Spawner()
        env = {"PATH": os.environ["PATH"], "PAD": "p" * 20_000}

        async def one() -> int:
            child = await spawner.start(["true"], cwd=None, env=env)
            await child.communicate(b"", 100, 100)
            return await child.wait()

        codes = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(300))), 60)
        await spawner.close()
        return codes

    assert asyncio.run(burst()) == [0] * 300


def test_a_start_cancelled_before_it_returns_leaves_nothing_running() -> None:
    """The spawner starts the command anyway; the daemon, told its pid when nobody waits for it any
    more (or when the start was cancelled after its answer came), kills its group (it never got
    its input)."""
    mark = f"{os.getpid()}-{time.monotonic_ns()}"

    def marked() -> list[int]:
        return processes_with("TRIGGERD_TEST_MARK", {mark})

    async def scenario() -> int:
        spawner = Spawner()
        env = {"PATH": os.environ["PATH"], "TRIGGERD_TEST_MARK": mark}
        await (await spawner.start(["true"], cwd=None, env={"PATH": os.environ["PATH"]})).wait()  # it runs
        # Cancelled at several moments: before the answer comes, and after it came but before the
        # start resumed (the loop turns in between), and after it returned (then it is ours to end).
        for pause in ("answered", 0, 1, 2, 3, 5, 8, 13, 0.0005, 0.001, 0.002, 0.005):
            task = asyncio.create_task(spawner.start(["sleep", "30"], cwd=None, env=env))
            if pause == "answered":  # the answer is in (it left the queue), the start not resumed yet
                await asyncio.sleep(0)
                while spawner._answers:  # noqa: ASYNC110 - the moment between two loop turns
                    await asyncio.sleep(0)
            elif isinstance(pause, int):
                for _ in range(pause):
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(float(pause))
            task.cancel()
            try:
                child = await task
            except asyncio.CancelledError:
                continue
            os.killpg(child.pid, signal.SIGKILL)
            child.close()
            await child.wait()
        deadline = time.monotonic() + 5
        while marked() and time.monotonic() < deadline:  # noqa: ASYNC110 - processes of another parent
            await asyncio.sleep(0.05)
        still = len(marked())
        again = await spawner.start(["true"], cwd=None, env={"PATH": os.environ["PATH"]})
        assert await asyncio.wait_for(again.wait(), 5) == 0
        again.close()
        await spawner.close()
        return still

    assert asyncio.run(scenario()) == 0


def test_a_spawner_that_cannot_run_leaves_commands_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spawner that exits before it answers anything (here: its script is missing) is not started
    again and again: the command that waited on it, and every one after, start in the daemon."""
    monkeypatch.setattr(child_module, "HELPER", tmp_path / "missing.py")

    async def scenario() -> list[tuple[int, int]]:
        spawner, seen = Spawner(), []
        for _ in range(3):
            child = await spawner.start(["sleep", "0.2"], cwd=None, env={"PATH": os.environ["PATH"]})
            parent = parent_of(child.pid)  # it runs for 0.2 s: its parent is still the one that started it
            await child.communicate(b"", 100, 100)
            seen.append((parent, await child.wait()))
        await spawner.close()
        return seen

    assert asyncio.run(scenario()) == [(os.getpid(), 0)] * 3
