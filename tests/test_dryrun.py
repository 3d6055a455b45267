"""`triggerd test`: a webhook trigger tried on a sample request, offline (SPEC 6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from multidict import CIMultiDict

from tests.conftest import Write
from triggerd.config.models import Authentication, AuthType, Secret
from triggerd.http.auth import DELIVERY_HEADERS, Verifier

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


def trial(
    project: Path, *args: str, env: dict[str, str] | None = None, config: str | None = "triggerd.yaml"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triggerd", "test", *args, *(["--config", config] if config else [])],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


def test_an_accepted_sample_shows_each_clause_the_mapping_the_input_the_prompt_and_the_answer(project: Path) -> None:
    proc = trial(project, "pr", "--payload", "opened.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "trigger         pr: POST /webhooks/pr (defs/all.yaml:7)",
        "authentication  github: skipped (use --verify)",
        "filter          true",
        '  true  $.headers[\'x-github-event\'] eq "pull_request" (actual: "pull_request")',
        '  true  $.body.action in ["opened", "synchronize"] (actual: "opened")',
        "input mapping",
        "  number = 7   ($.body.number)",
        '  title = "Fix the thing"   ($.body.title)',
        "run input",
        "  {",
        '    "number": 7,',
        '    "title": "Fix the thing"',
        "  }",
        "prompt          (claude-test)",
        "  Review #7: Fix the thing",
        "idempotency key none (each request starts a run)",
        'answer          202 {"run_id": "<run id>", "trigger_id": "pr", "status": "pending"}',
    ]


def test_a_filtered_sample_exits_1_and_says_which_clause(project: Path) -> None:
    proc = trial(project, "pr", "--payload", "closed.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-4:] == [
        "filter          false",
        '  true  $.headers[\'x-github-event\'] eq "pull_request" (actual: "pull_request")',
        '  false $.body.action in ["opened", "synchronize"] (actual: "closed")',
        'answer          200 {"status": "filtered", "trigger_id": "pr"}',
    ]


def test_a_missing_required_mapping_exits_1_with_422(project: Path) -> None:
    proc = trial(project, "pr", "--payload", "nonumber.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-2:] == [
        "input mapping   required input 'number' is missing: $.body.number matched nothing",
        'answer          422 {"error": "required input \'number\' is missing: $.body.number matched nothing", '
        '"path": "$.body.number"}',
    ]


def test_verify_checks_the_signature_with_the_real_secret(project: Path) -> None:
    body = (project / "opened.json").read_bytes()
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    args = ["pr", "--payload", "opened.json", "--header", "X-GitHub-Event: pull_request", "--verify"]
    delivery = ["--header", "X-GitHub-Delivery: d-1"]
    ok = trial(project, *args, *delivery, "--header", f"X-Hub-Signature-256: {good}", env={"GH_SECRET": "s3cret"})
    assert ok.returncode == 0
    assert "authentication  github: ok" in ok.stdout
    assert 'idempotency key "d-1"   (X-GitHub-Delivery, the github default)' in ok.stdout
    bad = trial(project, *args, "--header", "X-Hub-Signature-256: sha256=00", env={"GH_SECRET": "s3cret"})
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[-2:] == [
        "authentication  github: FAILED: X-Hub-Signature-256 does not match",
        'answer          401 {"error": "authentication failed"}',
    ]
    unset = trial(project, *args, "--header", f"X-Hub-Signature-256: {good}")
    assert unset.returncode == 2  # without the secret the trigger does not load, so it cannot be verified
    assert "environment variable GH_SECRET is not set" in unset.stderr


def test_the_provider_delivery_id_is_the_key_without_verify_too(project: Path) -> None:
    proc = trial(
        project,
        "pr",
        "--payload",
        "opened.json",
        "--header",
        "X-GitHub-Event: pull_request",
        "--header",
        "X-GitHub-Delivery: 72d3162e",
    )
    assert proc.returncode == 0
    assert 'idempotency key "72d3162e"   (X-GitHub-Delivery, the github default)' in proc.stdout.splitlines()


def _signed(auth: Authentication, body: bytes, now: datetime, delivery: str) -> dict[str, str]:
    """Headers a provider would send: a valid signature and its delivery id."""
    secret = auth.secrets[0].reveal().encode()
    mac = hmac.new(secret, body, hashlib.sha256)
    if auth.scheme == "github":
        return {"X-Hub-Signature-256": f"sha256={mac.hexdigest()}", "X-GitHub-Delivery": delivery}
    if auth.scheme == "github-sha1":
        sha1 = hmac.new(secret, body, hashlib.sha1).hexdigest()
        return {"X-Hub-Signature": f"sha1={sha1}", "X-GitHub-Delivery": delivery}
    if auth.scheme == "gitlab":
        return {"X-Gitlab-Token": secret.decode(), "X-Gitlab-Event-UUID": delivery}
    if auth.scheme == "shopify":
        return {"X-Shopify-Hmac-Sha256": base64.b64encode(mac.digest()).decode(), "X-Shopify-Webhook-Id": delivery}
    stamp = str(int(now.timestamp()))
    key = base64.b64decode(secret.removeprefix(b"whsec_"))
    signature = hmac.new(key, f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": delivery,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(signature).decode(),
    }


# Each scheme with a delivery id, by its own type and, where SPEC 3.3 has one, by generic hmac's preset.
_SCHEMES = [
    (AuthType.GITHUB, None),
    (AuthType.HMAC, "X-Hub-Signature-256"),
    (AuthType.HMAC, "x-hub-signature"),
    (AuthType.GITLAB, None),
    (AuthType.STANDARD_WEBHOOKS, None),
    (AuthType.HMAC, "webhook-signature"),
    (AuthType.SHOPIFY, None),
    (AuthType.HMAC, "X-Shopify-Hmac-Sha256"),
]


@pytest.mark.parametrize(("kind", "header"), _SCHEMES)
def test_the_delivery_header_table_is_what_the_verifier_returns(kind: AuthType, header: str | None) -> None:
    standard = kind is AuthType.STANDARD_WEBHOOKS or header == "webhook-signature"
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode() if standard else "s3cret"
    auth = Authentication(type=kind, secrets=(Secret(secret),), header=header)
    now = datetime.now(UTC)
    headers = _signed(auth, b"{}", now, "delivery-7")
    assert Verifier(auth).verify(CIMultiDict(headers), b"{}", now).delivery_id == "delivery-7"
    assert headers[DELIVERY_HEADERS[auth.scheme]] == "delivery-7"


def test_every_scheme_with_a_delivery_header_is_checked_above() -> None:
    assert {Authentication(type=k, secrets=(), header=h).scheme for k, h in _SCHEMES} == set(DELIVERY_HEADERS)


STATIC = """\
agent: {id: echo, type: command, command: [echo, "said: {{ text }}"]}
---
trigger:
  id: slash
  type: webhook
  webhook:
    authentication: {type: standard-webhooks, secret: "${HOOK_SECRET}"}
    response: {status: 200, body: {text: "on it"}, headers: {X-Handled-By: triggerd}}
  agent: {id: echo, input_mapping: {text: $.body.text}}
---
trigger:
  id: keyed
  type: webhook
  webhook: {response: {status: 200, body: "Thinking..."}}
  idempotency_key: "$.body.id"
  agent: {id: echo, input_mapping: {text: $.body.text}}
"""


def test_paths_instead_of_a_settings_file_a_static_answer_and_the_key(write: Write, tmp_path: Path) -> None:
    write("hooks/static.yaml", STATIC)
    write("broken/other.yaml", "trigger: {id: other, type: nonsense}\n")
    write("sample.json", '{"id": "msg-9", "text": "deploy"}')
    proc = trial(
        tmp_path, "slash", "hooks", "broken", "--payload", "sample.json", "--header", "webhook-id: msg_2Lh", config=None
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-3:] == [
        'idempotency key "msg_2Lh"   (webhook-id, the standard-webhooks default)',
        'answer          200 {"text": "on it"}',
        "  X-Handled-By: triggerd",
    ]
    # Only the problems of the trigger and its agent: not the broken file's.
    assert proc.stderr == (
        "hooks/static.yaml:7:55: warning: environment variable HOOK_SECRET is not set "
        "(at /trigger/webhook/authentication/secret)\n"
    )
    keyed = trial(tmp_path, "keyed", "hooks", "--payload", "sample.json", config=None)
    assert keyed.stdout.splitlines()[-2:] == [
        'idempotency key "msg-9"   ($.body.id)',
        "answer          200 Thinking...",
    ]
    assert keyed.stderr == ""


NESTED = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: nested
  type: webhook
  webhook:
    filter:
      all:
        - not: {field: draft, operator: eq, value: true}
        - any:
            - {field: label, operator: eq, value: null}
            - {field: size, operator: gt, value: 10}
        - not:
            any:
              - {field: title, operator: contains, value: "WIP"}
  agent: {id: echo}
"""


def test_not_and_nested_groups_read_as_written_with_yaml_literals(write: Write, tmp_path: Path) -> None:
    write("hooks.yaml", NESTED)
    write("body.json", '{"draft": false, "label": null, "size": 3, "title": "Add retries"}')
    proc = trial(tmp_path, "nested", "hooks.yaml", "--payload", "body.json", config=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2:11] == [
        "filter          true",
        "  true  not (draft eq true) (actual: false)",
        "  true  any of:",
        "    true  label eq null (actual: null)",
        "    false size gt 10 (actual: 3)",
        "  true  not (",
        "    false any of:",
        '      false title contains "WIP" (actual: "Add retries")',
        "        )",
    ]


EVENT_DEFS = """\
agent: {id: echo, type: command, command: [echo, "errors: {{ count }}"]}
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


def _event_trial(
    write: Write, tmp_path: Path, sample: object, defs: str = EVENT_DEFS
) -> subprocess.CompletedProcess[str]:
    write("defs/all.yaml", defs)
    write("event.json", json.dumps(sample))
    return trial(tmp_path, "errors", "defs", "--event", "event.json", config=None)


@pytest.mark.parametrize(
    ("event", "code", "last"),
    [
        ({"type": "error.db", "source": "system", "severity": "low"}, 1, '  false severity gte "high" (actual: "low")'),
        ({"type": "error.db", "source": "web", "severity": "high"}, 1, "source          web is not one of: system"),
        ({"type": "warning.db", "source": "system"}, 1, "type            warning.db does not match error.*"),
    ],
)
def test_an_event_trigger_on_a_sample_event_that_does_not_match(
    write: Write, tmp_path: Path, event: dict[str, str], code: int, last: str
) -> None:
    proc = _event_trial(write, tmp_path, {"id": "evt_1", **event})
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-2:] == [
        last,
        'answer          202 {"event_ids": ["evt_1"], "matched": [], "run_ids": []}',
    ]


def test_an_event_that_is_not_one_answers_400(write: Write, tmp_path: Path) -> None:
    proc = _event_trial(write, tmp_path, {"source": "system"})
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-2:] == [
        "event           event 0: 'type' is required and must be a non-empty string",
        'answer          400 {"error": "event 0: \'type\' is required and must be a non-empty string"}',
    ]


def test_one_event_counts_one_of_the_threshold_and_starts_no_run(write: Write, tmp_path: Path) -> None:
    sample = {"id": "evt_1", "type": "error.db", "source": "system", "severity": "critical"}
    proc = _event_trial(write, tmp_path, sample)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-4:] == [
        "counting        count 1 of 3 within 300s, group (all): no run yet (2 more to fire)",
        "counted events  group (all): 1",
        '  {"id": "evt_1", "type": "error.db", "source": "system", "time": '
        + json.dumps(json.loads(proc.stdout.splitlines()[-2][2:])["time"])
        + ', "data": {}, "severity": "critical"}',
        'answer          202 {"event_ids": ["evt_1"], "matched": ["errors"], "run_ids": []}',
    ]
    assert "argv" not in proc.stdout


def test_a_threshold_of_one_fires_on_the_sample(write: Write, tmp_path: Path) -> None:
    sample = {"id": "evt_1", "type": "error.db", "source": "system", "severity": "high"}
    proc = _event_trial(write, tmp_path, sample, EVENT_DEFS.replace("count_threshold: 3", "count_threshold: 1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "counting        count 1 of 1 within 300s, group (all): fires" in lines
    assert lines[-2:] == [
        'argv            ["echo", "errors: 1"]',
        'answer          202 {"event_ids": ["evt_1"], "matched": ["errors"], "run_ids": ["<run id>"]}',
    ]


def test_a_list_of_events_is_counted_per_group_until_one_fires(write: Write, tmp_path: Path) -> None:
    grouped = EVENT_DEFS.replace("    window: 5m\n", "    window: 5m\n    group_by: $.event.data.service\n")
    events = [
        {"id": f"evt_{n}", "type": "error.db", "source": "system", "severity": "high", "data": {"service": service}}
        for n, service in enumerate(["api", "db", "api", "api"], 1)
    ]
    proc = _event_trial(write, tmp_path, events, grouped)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    counting = [line for line in lines if line.startswith(("counting", "counted events"))]
    assert counting == [
        'counting        count 1 of 3 within 300s, group "api": no run yet (2 more to fire)',
        'counting        count 1 of 3 within 300s, group "db": no run yet (2 more to fire)',
        'counting        count 2 of 3 within 300s, group "api": no run yet (1 more to fire)',
        'counting        count 3 of 3 within 300s, group "api": fires',
        'counted events  group "api": 3',
        'counted events  group "db": 1',
    ]
    counted = lines.index('counted events  group "api": 3')
    assert [json.loads(line)["id"] for line in lines[counted + 1 : counted + 4]] == ["evt_1", "evt_3", "evt_4"]
    assert 'argv            ["echo", "errors: 3"]' in lines
    assert lines[-1] == (
        'answer          202 {"event_ids": ["evt_1", "evt_2", "evt_3", "evt_4"], "matched": ["errors"], '
        '"run_ids": ["<run id>"]}'
    )


def test_only_the_problems_of_the_trigger_and_its_agent_are_printed(project: Path) -> None:
    (project / "defs" / "other.yaml").write_text(
        "trigger:\n  id: other\n  type: webhook\n  webhook: {}\n  agent: {id: ghost}\n"
    )
    proc = trial(project, "pr", "--payload", "opened.json", "--header", "X-GitHub-Event: pull_request")
    assert proc.returncode == 0
    assert proc.stderr == (
        "defs/all.yaml:11:44: warning: environment variable GH_SECRET is not set "
        "(at /trigger/webhook/authentication/secret)\n"
    )


def test_a_disabled_trigger_is_tried_as_if_enabled_but_answers_as_the_daemon_does(write: Write, tmp_path: Path) -> None:
    write("hooks.yaml", NESTED.replace("  type: webhook\n", "  type: webhook\n  enabled: false\n"))
    write("body.json", '{"draft": false, "label": null, "size": 3, "title": "Add retries"}')
    proc = trial(tmp_path, "nested", "hooks.yaml", "--payload", "body.json", config=None)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "trigger         nested: POST /webhooks/nested (hooks.yaml:3), disabled: tried as if enabled"
    assert lines[-2:] == [
        'if enabled      202 {"run_id": "<run id>", "trigger_id": "nested", "status": "pending"}',
        'answer          404 {"error": "no webhook at /webhooks/nested"}',
    ]
    write("defs/all.yaml", EVENT_DEFS.replace("  type: event\n", "  type: event\n  enabled: false\n"))
    write("event.json", json.dumps({"id": "evt_1", "type": "error.db", "source": "system", "severity": "high"}))
    event = trial(tmp_path, "errors", "defs", "--event", "event.json", config=None)
    assert event.returncode == 1
    assert "type            error.db matches error.*" in event.stdout
    assert event.stdout.splitlines()[-2:] == [
        'if enabled      202 {"event_ids": ["evt_1"], "matched": ["errors"], "run_ids": []}',
        'answer          202 {"event_ids": ["evt_1"], "matched": [], "run_ids": []}',
    ]


def test_a_request_sample_is_not_for_an_event_trigger(write: Write, tmp_path: Path) -> None:
    write("defs/all.yaml", EVENT_DEFS)
    proc = trial(tmp_path, "errors", "defs", "--header", "X-A: 1", config=None)
    assert (proc.returncode, proc.stderr.splitlines()[-1]) == (
        2,
        "triggerd test: --header does not apply to event trigger 'errors'",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no trigger 'nope' is loaded"),
        (["nightly"], "trigger 'nightly' is a schedule trigger; `test` takes webhook and event triggers"),
        (["pr", "--header", "no-colon"], "--header takes 'Name: value', not 'no-colon'"),
        (["pr", "--payload", "missing.json"], "no such file: missing.json"),
        (["pr", "--event", "opened.json"], "--event does not apply to webhook trigger 'pr'"),
    ],
)
def test_usage_errors_exit_2(project: Path, args: list[str], message: str) -> None:
    proc = trial(project, *args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"triggerd test: {message}"


def test_a_path_that_does_not_exist_is_a_usage_error(project: Path) -> None:
    proc = trial(project, "pr", "nothing-here", config=None)
    assert (proc.returncode, proc.stderr) == (2, "triggerd test: no such file or directory: nothing-here\n")
    after_an_option = trial(project, "pr", "--payload", "opened.json", "defs", "nothing-here", config=None)
    assert (after_an_option.returncode, after_an_option.stderr) == (
        2,
        "triggerd test: no such file or directory: nothing-here\n",
    )


def test_json_payload_that_does_not_parse(project: Path) -> None:
    (project / "broken.json").write_text('{"action": ')
    proc = trial(project, "pr", "--payload", "broken.json")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-2].startswith("body            invalid JSON")
    assert proc.stdout.splitlines()[-1].startswith('answer          400 {"error": "invalid JSON')
