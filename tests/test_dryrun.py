"""`triggerd test`: a webhook trigger tried on a sample request, offline (SPEC 6)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Write

DEFS = """\
agent:
  id: reviewer
  type: anthropic
  model: claude-test
  prompt: "Review #{{ number }}: {{ title }}"
---
trigger:
  id: pr
  type: webhook
  webhook:
    authentication: {type: github, secret: "${GH_SECRET}"}
    filter:
      all:
        - {field: "$.headers['x-github-event']", operator: eq, value: pull_request}
        - {field: "$.body.action", operator: in, value: [opened, synchronize]}
  agent:
    id: reviewer
    input_mapping:
      number: {path: $.body.number, required: true}
      title: $.body.title
---
trigger:
  id: nightly
  type: schedule
  schedule: {cron: "0 3 * * *"}
  agent: {id: reviewer}
"""


@pytest.fixture
def project(write: Write, tmp_path: Path) -> Path:
    write("defs/all.yaml", DEFS)
    write("triggerd.yaml", "definitions: [defs]\n")
    write("opened.json", '{"action": "opened", "number": 7, "title": "Fix the thing"}')
    write("closed.json", '{"action": "closed", "number": 7}')
    write("nonumber.json", '{"action": "opened"}')
    return tmp_path


def trial(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triggerd", "test", *args, "--config", "triggerd.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


def test_an_accepted_sample_shows_each_clause_the_mapping_the_input_and_the_prompt(project: Path) -> None:
    proc = trial(project, "pr", "--payload", "opened.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "trigger         pr: POST /webhooks/pr (defs/all.yaml:7)",
        "authentication  github: skipped (use --verify)",
        "filter          true",
        "  true  $.headers['x-github-event'] eq 'pull_request' (actual: 'pull_request')",
        "  true  $.body.action in ['opened', 'synchronize'] (actual: 'opened')",
        "input mapping",
        "  number = 7   ($.body.number)",
        '  title = "Fix the thing"   ($.body.title)',
        "idempotency key none",
        "run input",
        "  {",
        '    "number": 7,',
        '    "title": "Fix the thing"',
        "  }",
        "prompt          (claude-test)",
        "  Review #7: Fix the thing",
        "verdict         accepted -> 202 (nothing was dispatched)",
    ]


def test_a_filtered_sample_exits_1_and_says_which_clause(project: Path) -> None:
    proc = trial(project, "pr", "--payload", "closed.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 1
    assert "filter          false -> 200 filtered" in proc.stdout
    assert "  false $.body.action in ['opened', 'synchronize'] (actual: 'closed')" in proc.stdout


def test_a_missing_required_mapping_exits_1_with_422(project: Path) -> None:
    proc = trial(project, "pr", "--payload", "nonumber.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == (
        "input mapping   required input 'number' is missing: $.body.number matched nothing -> 422"
    )


def test_verify_checks_the_signature_with_the_real_secret(project: Path) -> None:
    body = (project / "opened.json").read_bytes()
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    args = ["pr", "--payload", "opened.json", "--header", "X-GitHub-Event: pull_request", "--verify"]
    ok = trial(project, *args, "--header", f"X-Hub-Signature-256: {good}", env={"GH_SECRET": "s3cret"})
    assert ok.returncode == 0
    assert "authentication  github: ok" in ok.stdout
    bad = trial(project, *args, "--header", "X-Hub-Signature-256: sha256=00", env={"GH_SECRET": "s3cret"})
    assert bad.returncode == 1
    assert "github: FAILED: X-Hub-Signature-256 does not match -> 401" in bad.stdout
    unset = trial(project, *args, "--header", f"X-Hub-Signature-256: {good}")
    assert unset.returncode == 2  # without the secret the trigger does not load, so it cannot be verified
    assert "environment variable GH_SECRET is not set" in unset.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no trigger 'nope' is loaded"),
        (["nightly"], "trigger 'nightly' is a schedule trigger; `test` takes webhook and event triggers"),
        (["pr", "--header", "no-colon"], "--header takes 'Name: value', not 'no-colon'"),
        (["pr", "--payload", "missing.json"], "no such file: missing.json"),
    ],
)
def test_usage_errors_exit_2(project: Path, args: list[str], message: str) -> None:
    proc = trial(project, *args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"triggerd test: {message}"


def test_json_payload_that_does_not_parse(project: Path) -> None:
    (project / "broken.json").write_text('{"action": ')
    proc = trial(project, "pr", "--payload", "broken.json")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1].startswith("body            invalid JSON")


EVENT_DEFS = """\
agent: {id: echo, type: command, command: [echo, "{{ count }} errors"]}
---
trigger:
  id: errors
  type: event
  event:
    pattern: "error.*"
    source: [system]
    condition: {severity: ">= high"}
    count_threshold: 3
    window: 5m
  agent:
    id: echo
    input_mapping: {count: $.count}
"""


@pytest.mark.parametrize(
    ("event", "code", "last"),
    [
        (
            {"type": "error.db", "source": "system", "severity": "critical"},
            0,
            "verdict         matched (nothing was dispatched)",
        ),
        ({"type": "error.db", "source": "system", "severity": "low"}, 1, "  false severity gte 'high' (actual: 'low')"),
        ({"type": "error.db", "source": "web", "severity": "high"}, 1, "source          web is not one of: system"),
        ({"type": "warning.db", "source": "system"}, 1, "verdict         not matched"),
        ({"source": "system"}, 1, "event           event 0: 'type' is required and must be a non-empty string -> 400"),
    ],
)
def test_an_event_trigger_on_a_sample_event(
    write: Write, tmp_path: Path, event: dict[str, str], code: int, last: str
) -> None:
    write("defs/all.yaml", EVENT_DEFS)
    write("triggerd.yaml", "definitions: [defs]\n")
    write("event.json", json.dumps(event))
    proc = trial(tmp_path, "errors", "--event", "event.json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == last
    if code == 0:
        assert "counting        this event counts 1 of 3 within 300s, group (all)" in proc.stdout
        assert 'argv            ["echo", "1 errors"]' in proc.stdout
