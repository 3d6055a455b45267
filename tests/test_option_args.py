"""A value from the input never becomes a command's option unless the agent allows it (SPEC 5.1)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, http, running_daemon
from triggerd.agents.abc import AgentRequest
from triggerd.agents.command import CommandBackend
from triggerd.config.models import AgentType, CommandAgent, Origin, Secret
from triggerd.errors import AgentFailure
from triggerd.mapping import Template

AGENTS = """\
agent:
  id: sorter
  type: command
  command: ["sort", "{{ msg }}"]
  working_dir: WORK
---
agent:
  id: sorter-allowed
  type: command
  command: ["sort", "{{ msg }}"]
  working_dir: WORK
  option_args: allow
---
agent:
  id: sorter-separated
  type: command
  command: ["sort", "--", "{{ msg }}"]
  working_dir: WORK
"""

TRIGGERS = "".join(
    f"""---
trigger:
  id: {agent}
  type: webhook
  webhook: {{}}
  agent:
    id: {agent}
    input_mapping: {{msg: $.body.msg}}
  retry: {{max_attempts: 3, backoff: 1s}}
"""
    for agent in ("sorter", "sorter-allowed", "sorter-separated")
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("option-args")
    work = root / "work"
    work.mkdir()
    (work / "-lines.txt").write_text("pear\napple\n")
    with running_daemon(root, AGENTS.replace("WORK", str(work)) + TRIGGERS) as running:
        yield running


def post(daemon: Daemon, trigger: str, msg: str) -> dict[str, Any]:
    """An anonymous webhook call, and the run it made once finished."""
    status, answer = http("POST", f"{daemon.url}/webhooks/{trigger}", {"msg": msg})
    assert status == 202, answer
    return daemon.wait_run(answer["run_id"])


def test_a_webhook_value_starting_with_dash_fails_the_run_and_writes_no_file(daemon: Daemon) -> None:
    run = post(daemon, "sorter", "-oowned.txt")
    assert run["status"] == "failed"
    assert run["error"] == (
        "argument 1 of the command ({{ msg }}) starts with '-' after rendering and would be read as an option; "
        'put "--" before it in the command, or set option_args: allow'
    )
    assert len(run["attempts"]) == 1  # not retried: the same input fails the same way
    assert not (daemon.root / "work" / "owned.txt").exists()
    assert post(daemon, "sorter", "-lines.txt")["status"] == "failed"  # a file name that looks like an option, too


def test_option_args_allow_passes_the_value_on(daemon: Daemon) -> None:
    run = post(daemon, "sorter-allowed", "-oallowed.txt")
    assert run["status"] == "completed"
    assert (daemon.root / "work" / "allowed.txt").read_text() == '{"msg": "-oallowed.txt"}\n'  # the input, sorted


def test_after_a_double_dash_the_value_is_an_operand(daemon: Daemon) -> None:
    run = post(daemon, "sorter-separated", "-lines.txt")
    assert (run["status"], run["output"]) == ("completed", "apple\npear\n")


def test_validate_warns_at_the_argument_naming_the_agent(tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(AGENTS.replace("WORK", str(tmp_path)))
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "validate", "agents.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, "0 error(s), 1 warning(s) in 1 definition file(s)\n")
    assert proc.stdout == (
        "agents.yaml:4:21: warning: agent 'sorter': argument 1 ({{ msg }}) can render to a value that starts "
        "with '-' and becomes an option; put \"--\" before it in the command, or set option_args: allow "
        "(at /agent/command/1)\n"
    )


def agent(*argv: str, allow: bool = False) -> CommandAgent:
    return CommandAgent(
        id="c",
        type=AgentType.COMMAND,
        name=None,
        description=None,
        max_concurrent=None,
        timeout_seconds=None,
        origin=Origin("x.yaml", 1),
        fingerprint="f",
        command=tuple(Template.parse(a) for a in argv),
        working_dir=None,
        env={"UNUSED": Secret("x")},
        max_output_bytes=1024,
        allow_option_args=allow,
    )


def rendered(*argv: str, value: Any = "-x", allow: bool = False) -> list[str]:
    return CommandBackend(agent(*argv, allow=allow)).argv(AgentRequest("r", "t", "c", 1, {"v": value}))


def test_which_arguments_a_value_can_turn_into_an_option() -> None:
    assert rendered("prog", "--ref", "--ref={{ v }}", "x{{ v }}") == ["prog", "--ref", "--ref=-x", "x-x"]
    assert rendered("{{ v }}") == ["-x"]  # the program itself is never read as an option
    assert rendered("prog", "--", "{{ v }}", "{{ v }}.txt") == ["prog", "--", "-x", "-x.txt"]
    assert rendered("prog", "{{ v }}", allow=True) == ["prog", "-x"]
    assert rendered("prog", "{{ v }}", value="fine") == ["prog", "fine"]
    for argv, value, index in [
        (("prog", "{{ v }}"), "-x", 1),
        (("prog", "a", "{{ v }}.txt"), "--help", 2),  # begins with the placeholder: still exposed
        (("prog", "{{ v }}"), -5, 1),  # a number is inserted as JSON: -5
        (("prog", "{{ v }}", "--", "{{ v }}"), "-x", 1),  # only what comes after "--" is exempt
        (("prog", "{{ v }}"), "--", 1),  # a "--" from the input is not the definition's "--"
    ]:
        with pytest.raises(AgentFailure) as failure:
            rendered(*argv, value=value)
        assert failure.value.retryable is False
        assert failure.value.message.startswith(f"argument {index} of the command ({argv[index]}) starts with '-'")
