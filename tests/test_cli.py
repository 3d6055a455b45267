"""`triggerd validate`, `schema` and `list` as a user runs them: a real process, real files."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import AGENT, REPO, Write
from tests.harness import run_cli
from triggerd.cli import _parser


def triggerd(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with a plain PATH."""
    return run_cli(cwd, *args, env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=60)


BROKEN = """\
trigger:
  id: broken
  type: schedule
  schedule:
    cron: "0 0 31 2 *"
    timezone: Nowhere/Special
  agent: {id: nobody}
"""


@pytest.fixture
def project(write: Write, tmp_path: Path) -> Path:
    write("agents/a.yaml", AGENT)
    write(
        "triggers/ok.yaml",
        "trigger:\n  id: ok\n  type: event\n  event: {pattern: 'x.*'}\n  agent: {id: worker}\n",
    )
    write("triggers/broken.yaml", BROKEN)
    write("triggerd.yaml", "definitions: [triggers, agents]\n")
    return tmp_path


def test_validate_reports_every_problem_at_once_and_exits_1(project: Path) -> None:
    proc = triggerd("validate", "--config", "triggerd.yaml", cwd=project)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "triggers/broken.yaml:5:11: error: cron expression '0 0 31 2 *' can never fire (no such day in those "
        "months) (at /trigger/schedule/cron)",
        "triggers/broken.yaml:6:15: error: unknown time zone 'Nowhere/Special' (use an IANA name such as "
        "'America/New_York' or 'UTC') (at /trigger/schedule/timezone)",
        "triggers/broken.yaml:7:15: error: unknown agent 'nobody' (at /trigger/agent/id)",
    ]
    assert proc.stderr == "3 error(s), 0 warning(s) in 3 definition file(s)\n"


def test_validate_finds_config_triggerd_yaml_by_default(project: Path) -> None:
    (project / "config").mkdir()
    (project / "triggerd.yaml").rename(project / "config" / "triggerd.yaml")
    (project / "config" / "triggerd.yaml").write_text("definitions: [../agents, ../triggers/ok.yaml]\n")
    proc = triggerd("validate", cwd=project)
    assert (proc.returncode, proc.stdout) == (0, "")


def test_validate_json_format(project: Path) -> None:
    proc = triggerd("validate", "triggers", "agents", "--format", "json", cwd=project)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["valid"] is False
    assert report["problems"][0] == {
        "file": "triggers/broken.yaml",
        "line": 5,
        "column": 11,
        "severity": "error",
        "message": "cron expression '0 0 31 2 *' can never fire (no such day in those months)",
        "pointer": "/trigger/schedule/cron",
    }
    assert len(report["problems"]) == 3


def test_validate_github_format(project: Path) -> None:
    proc = triggerd("validate", "triggers/broken.yaml", "agents", "--format", "github", cwd=project)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == (
        "::error file=triggers/broken.yaml,line=5,col=11::cron expression '0 0 31 2 *' can never fire "
        "(no such day in those months) (at /trigger/schedule/cron)"
    )


def test_validate_only_the_named_paths_sees_unknown_agents(project: Path) -> None:
    proc = triggerd("validate", "triggers/ok.yaml", cwd=project)
    assert proc.returncode == 1
    assert proc.stdout == "triggers/ok.yaml:5:15: error: unknown agent 'worker' (at /trigger/agent/id)\n"


def test_warnings_pass_unless_strict(write: Write, tmp_path: Path) -> None:
    write("a.yaml", AGENT.replace('["cat"]', '["cat", "${MISSING}"]'))
    relaxed = triggerd("validate", "a.yaml", cwd=tmp_path)
    strict = triggerd("validate", "a.yaml", "--strict", cwd=tmp_path)
    line = "a.yaml:4:20: {}: environment variable MISSING is not set (at /agent/command/1)\n"
    assert (relaxed.returncode, relaxed.stdout) == (0, line.format("warning"))
    assert (strict.returncode, strict.stdout) == (1, line.format("error"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "nope.yaml"], "triggerd validate: no such file or directory: nope.yaml\n"),
        (
            ["validate", "--config", "nope.yaml"],
            "triggerd validate: no settings file at nope.yaml (use --config PATH)\n",
        ),
        (["list", "--config", "nope.yaml"], "triggerd list: no settings file at nope.yaml (use --config PATH)\n"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = triggerd(*args, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, message)


NO_SETTINGS = (
    "no settings file: neither config/triggerd.yaml (in the working directory) nor "
    "/etc/triggerd/triggerd.yaml exists (use --config PATH)"
)


def test_run_without_a_settings_file_exits_2_naming_both_defaults(tmp_path: Path) -> None:
    if Path("/etc/triggerd/triggerd.yaml").exists():
        pytest.skip("this machine has /etc/triggerd/triggerd.yaml")
    # Before, the daemon started on built-in defaults here and watched this folder: the timeout bounds that.
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
        timeout=20,
    )
    assert (proc.returncode, proc.stderr) == (2, f"triggerd run: {NO_SETTINGS}\n")
    assert list(tmp_path.iterdir()) == []  # no store, no state


@pytest.mark.parametrize("args", [["list"], ["next", "report"], ["test", "hook"], ["validate"]])
def test_offline_commands_without_a_settings_file_exit_2(tmp_path: Path, args: list[str]) -> None:
    if Path("/etc/triggerd/triggerd.yaml").exists():
        pytest.skip("this machine has /etc/triggerd/triggerd.yaml")
    proc = triggerd(*args, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, f"triggerd {args[0]}: {NO_SETTINGS}\n")


def test_daemon_commands_without_a_settings_file_still_find_the_daemon(tmp_path: Path) -> None:
    proc = triggerd("runs", cwd=tmp_path, env={"TRIGGERD_URL": "http://127.0.0.1:9"})
    assert proc.returncode == 1  # not a usage error: it tried the daemon (nothing listens on port 9)
    assert "127.0.0.1:9" in proc.stderr


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help_with_its_default_and_every_command_an_example(name: str) -> None:
    sub = _subcommands()[name]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.dest} has no help"
        if action.option_strings:
            shown = formatter._get_help_string(action) or ""
            assert "(default" in shown, f"{name} {action.option_strings[0]} does not show its default"
    examples = [line.strip() for line in (sub.epilog or "").splitlines()]
    assert any(line.startswith(f"triggerd {name}") for line in examples), sub.epilog
    assert f"examples:\n  triggerd {name}" in sub.format_help()


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    assert triggerd("validate", "--format", "xml", cwd=tmp_path).returncode == 2
    assert triggerd("frobnicate", cwd=tmp_path).returncode == 2


@pytest.mark.parametrize("kind", ["settings", "trigger", "agent"])
def test_schema_prints_the_shipped_schema(kind: str) -> None:
    proc = triggerd("schema", kind)
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    filename = "triggerd" if kind == "settings" else kind
    assert schema == json.loads((REPO / "schemas" / f"{filename}.schema.json").read_text())


def test_schema_without_argument_prints_all_of_them() -> None:
    proc = triggerd("schema")
    assert sorted(json.loads(proc.stdout)) == ["agent", "settings", "source", "trigger"]


def test_list_text_and_json(project: Path) -> None:
    (project / "triggers" / "broken.yaml").unlink()
    (project / "triggers" / "webhook.yaml").write_text(
        "trigger:\n  id: hook\n  type: webhook\n  enabled: false\n  webhook: {}\n  agent: {id: worker}\n"
    )
    text = triggerd("list", "--config", "triggerd.yaml", cwd=project)
    assert text.returncode == 0
    assert text.stdout.splitlines() == [
        "ID    TYPE     ENABLED  AGENT   FIRES ON",
        "hook  webhook  no       worker  POST /webhooks/hook",
        "ok    event    yes      worker  x.*",
    ]
    rows = json.loads(triggerd("list", "--config", "triggerd.yaml", "--format", "json", cwd=project).stdout)
    assert rows[0] == {
        "id": "hook",
        "type": "webhook",
        "enabled": False,
        "agent": "worker",
        "on": "POST /webhooks/hook",
    }


def test_list_reports_broken_definitions_and_lists_the_rest(project: Path) -> None:
    proc = triggerd("list", "--config", "triggerd.yaml", cwd=project)
    assert proc.returncode == 1
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["ID", "ok"]
    assert "triggers/broken.yaml:5:11: error: cron expression" in proc.stderr


NEXT_DEFS = """\
agent: {id: a, type: command, command: [cat]}
---
trigger:
  id: report
  type: schedule
  schedule: {cron: "30 2 * * *", timezone: America/New_York, jitter_seconds: 600}
  agent: {id: a}
"""


def test_next_lists_slots_with_jitter_and_local_time(write: Write, tmp_path: Path) -> None:
    write("defs/all.yaml", NEXT_DEFS)
    write("triggerd.yaml", "definitions: [defs]\n")
    proc = triggerd(
        "next",
        "report",
        "-n",
        "2",
        "--after",
        "2026-03-07T12:00:00Z",
        "--format",
        "json",
        "--config",
        "triggerd.yaml",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    slots = json.loads(proc.stdout)
    assert [(s["nominal"], s["local"]) for s in slots] == [
        ("2026-03-08T07:00:00.000Z", "2026-03-08T03:00:00-04:00"),  # 02:30 does not exist that night
        ("2026-03-09T06:30:00.000Z", "2026-03-09T02:30:00-04:00"),
    ]
    for slot in slots:  # jitter delays by less than 600 s
        delay = datetime.fromisoformat(slot["fire_at"]) - datetime.fromisoformat(slot["nominal"])
        assert timedelta(0) <= delay < timedelta(seconds=600)
    text = triggerd(
        "next", "report", "-n", "1", "--after", "2026-03-07T12:00:00Z", "--config", "triggerd.yaml", cwd=tmp_path
    ).stdout.splitlines()
    assert text[0].split() == ["NOMINAL", "FIRE", "AT", "LOCAL", "(America/New_York)"]
    assert text[1].split()[0] == "2026-03-08T07:00:00.000Z"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--after", "tomorrow"], "--after takes an RFC 3339 instant with an offset, not 'tomorrow'"),
        (
            ["report", "--after", "2026-01-01T00:00:00"],
            "--after takes an RFC 3339 instant with an offset, not '2026-01-01T00:00:00'",
        ),
        (["report", "-n", "0"], "-n takes a whole number of at least 1"),
        (["nope"], "no trigger 'nope' is loaded"),
    ],
)
def test_next_usage_errors(write: Write, tmp_path: Path, args: list[str], message: str) -> None:
    write("defs/all.yaml", NEXT_DEFS)
    write("triggerd.yaml", "definitions: [defs]\n")
    proc = triggerd("next", *args, "--config", "triggerd.yaml", cwd=tmp_path)
    assert (proc.returncode, proc.stderr.splitlines()[-1]) == (2, f"triggerd next: {message}")
