"""The compat fixtures, config/ and examples/ are valid, and the wheel carries the schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, found, load_dir
from triggerd.config.loader import LoadMode, display_path, load
from triggerd.config.models import TriggerType

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())


def test_compat_definitions_validate_unchanged() -> None:
    result = load_dir(FIXTURES / "compat", env={"SLACK_WEBHOOK_SECRET": "x"})
    assert found(result) == [
        (
            display_path(FIXTURES / "compat" / "slack-command-handler.yaml"),
            11,
            "warning",
            "generic hmac on header X-Slack-Signature is verified with the slack preset, exactly as type 'slack', "
            "not as an HMAC of the bare body",
        )
    ]
    assert result.configuration is not None
    triggers = result.configuration.triggers
    assert sorted(triggers) == ["daily-sales-report", "error-handler", "slack-command-handler"]
    report = triggers["daily-sales-report"]
    assert (report.type, report.schedule and report.schedule.timezone) == (
        TriggerType.SCHEDULE,
        "America/New_York",
    )
    errors = triggers["error-handler"].event
    assert errors is not None and (errors.count_threshold, errors.window, errors.sources) == (
        5,
        300.0,
        ("system", "agents"),
    )
    slack = triggers["slack-command-handler"].webhook
    assert slack is not None and slack.endpoint == "/webhooks/slack/commands"
    assert [r.key for r in triggers["slack-command-handler"].agent.input_mapping] == [
        "text",
        "user_id",
        "channel",
    ]


def test_default_config_is_valid_offline_and_strict() -> None:
    result = load(REPO / "config" / "triggerd.yaml", mode=LoadMode.VALIDATE, env={})
    assert result.problems == []
    assert result.configuration is not None
    assert {a.type.value for a in result.configuration.agents.values()} == {"command"}
    assert len(result.configuration.triggers) == 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(example: Path, tmp_path: Path) -> None:
    (tmp_path / "slack-signing-secret").write_text("s\n")
    env = {
        name: "set"
        for name in (
            "ANTHROPIC_API_KEY",
            "GITHUB_WEBHOOK_SECRET",
            "GITHUB_WEBHOOK_SECRET_PREVIOUS",
            "STRIPE_WEBHOOK_SECRET",
            "FULFILMENT_TOKEN",
            "REPORT_DB_URL",
            "ALERTMANAGER_TOKEN",
            "PAGER_TOKEN",
        )
    }
    env["CREDENTIALS_DIRECTORY"] = str(tmp_path)
    result = load_dir(example, env=env, mode=LoadMode.DAEMON)
    assert result.problems == []
    assert result.configuration is not None and result.configuration.triggers


def test_five_example_sets_cover_the_issue() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "github-pr-review",
        "slack-command",
        "stripe-payment",
        "daily-report",
        "error-analyzer",
    }


def test_wheel_ships_the_schemas_and_validates_from_them(tmp_path: Path) -> None:
    # setuptools builds in the source folder (build/, *.egg-info): build a copy, not the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO / "triggerd", source / "triggerd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("triggerd-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for schema in ("triggerd.schema.json", "trigger.schema.json", "agent.schema.json"):
        assert f"triggerd/schemas/{schema}" in names
    assert {"triggerd/console/static/console.css", "triggerd/console/static/console.js"} <= set(names)  # SPEC 13
    assert "triggerd/agents/spawn_helper.py" in names  # run by path, never imported
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from triggerd.cli import main; "
            "raise SystemExit(main(['validate', sys.argv[2]]))",
            str(site),
            str(FIXTURES / "compat"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "slack" in proc.stdout
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import triggerd; print(triggerd.__file__)",
            str(site),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.startswith(str(site))
