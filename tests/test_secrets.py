"""Substituted secrets never leave the daemon (SPEC 2.3): masked in logs, answers, runs, events and
validation output; problems quote `${NAME}`; http agent errors name only scheme, host and port;
short admin tokens are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port, running_daemon, wait_for
from triggerd.config.loader import LoadMode, load
from triggerd.config.substitution import expand
from triggerd.masking import MASK, SecretRegistry

SECRET = "SWSEC_abad03c0ffee"
HOOK_KEY = "T0000/B0000/XXXXslackpathsecret"
ADMIN_TOKEN = "admin-token-of-twenty"
ENV = {"SW_SECRET": SECRET, "HOOK_KEY": HOOK_KEY, "ADMIN_TOKEN": ADMIN_TOKEN}
PY = json.dumps(sys.executable)

# Writes its input to a file named by its argument: what the agent really received.
RECORD = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"


def recorder(agent_id: str, path: Path) -> str:
    return f"agent:\n  id: {agent_id}\n  type: command\n  command: [{PY}, '-c', {json.dumps(RECORD)}, '{path}']\n"


def manual(trigger_id: str, agent_id: str, input_: str = "{}") -> str:
    return (
        f"trigger:\n  id: {trigger_id}\n  type: event\n  enabled: false\n  event: {{pattern: never}}\n"
        f"  agent: {{id: {agent_id}, input: {input_}}}\n"
    )


def on_event(trigger_id: str, pattern: str, agent_id: str) -> str:
    return (
        f"trigger:\n  id: {trigger_id}\n  type: event\n  event: {{pattern: {pattern}}}\n  agent: {{id: {agent_id}}}\n"
    )


def definitions(root: Path, closed_port: int) -> str:
    leaky = (
        f"agent:\n  id: leaky\n  type: http\n"
        f'  url: "http://127.0.0.1:{closed_port}/services/${{HOOK_KEY}}?token=${{SW_SECRET}}"\n'
    )
    printer = (
        f"agent:\n  id: printer\n  type: command\n"
        f"  command: [{PY}, '-c', \"import sys; open(sys.argv[1], 'w').write(sys.stdin.read()); "
        f"print('leaked ${{SW_SECRET}}')\", '{root / 'received.json'}']\n"
    )
    parts = [
        leaky,
        printer,
        recorder("failed-recorder", root / "failed-events.jsonl"),
        recorder("invalid-recorder", root / "invalid-events.jsonl"),
        manual("post-it", "leaky"),
        manual("print-it", "printer", '{token: "${SW_SECRET}"}'),
        on_event("on-failure", "error.agent.run_failed", "failed-recorder"),
        on_event("on-invalid", "error.config.invalid", "invalid-recorder"),
    ]
    return "---\n".join(parts)


@dataclass
class Scene:
    """What one daemon wrote while a secret went down every path: gathered once, judged by each test."""

    root: Path
    closed_port: int
    failed: dict[str, Any]
    printed: dict[str, Any]
    reload: Any
    answers: dict[str, Any]
    log: str

    def event_runs(self, name: str) -> str:
        path = self.root / name
        return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("secrets")
    closed_port = free_port()  # nothing listens there once the probe socket is closed
    settings = 'admin:\n  tokens: ["${ADMIN_TOKEN}"]\n'
    with running_daemon(root, definitions(root, closed_port), settings, env=ENV) as daemon:
        daemon.token = ADMIN_TOKEN
        failed = daemon.wait_run(daemon.fire("post-it"))
        printed = daemon.wait_run(daemon.fire("print-it"))
        (root / "defs" / "bad.yaml").write_text(
            'trigger:\n  id: walled\n  type: webhook\n  webhook:\n    ip_allowlist: ["${SW_SECRET}"]\n'
            "  agent: {id: printer}\n"
        )
        reload = daemon.request("POST", "/v1/reload")
        wait_for(lambda: (root / "failed-events.jsonl").exists(), what="the run of the run_failed event")
        wait_for(lambda: (root / "invalid-events.jsonl").exists(), what="the run of the config.invalid event")
        paths = ("/v1/runs", f"/v1/runs/{failed['id']}", f"/v1/runs/{printed['id']}", "/v1/dead-letters")
        answers = {path: daemon.request("GET", path) for path in paths}
    return Scene(root, closed_port, failed, printed, reload, answers, daemon.log.read_text())


def assert_no_secret(text: str, where: str) -> None:
    for secret in (SECRET, HOOK_KEY, ADMIN_TOKEN):
        assert secret not in text, f"{secret!r} in {where}: {text}"


def test_an_http_agent_error_names_only_scheme_host_and_port(scene: Scene) -> None:
    assert scene.failed["status"] == "failed"
    error = scene.failed["attempts"][0]["error"]
    assert error.startswith(f"POST http://127.0.0.1:{scene.closed_port} failed: cannot connect"), error
    assert "/services" not in error and "token=" not in error


def test_command_output_and_static_input_are_masked_and_the_agent_still_gets_the_value(scene: Scene) -> None:
    assert scene.printed["status"] == "completed"
    assert scene.printed["output"] == f"leaked {MASK}\n"
    assert scene.printed["input"]["token"] == MASK
    # Masking is for what triggerd writes out, not for what it hands the agent.
    assert json.loads((scene.root / "received.json").read_text())["token"] == SECRET


def test_the_admin_api_answers_hold_no_secret(scene: Scene) -> None:
    for path, (status, answer) in scene.answers.items():
        assert status == 200, (path, answer)
        assert_no_secret(json.dumps(answer), path)
    assert scene.failed["id"] in json.dumps(scene.answers["/v1/dead-letters"])


def test_a_rejected_reload_answers_the_problem_with_the_variable_not_its_value(scene: Scene) -> None:
    status, answer = scene.reload
    assert_no_secret(json.dumps(answer), "the POST /v1/reload answer")
    assert "'${SW_SECRET}' is not an IP address or CIDR network" in json.dumps(answer), (status, answer)


def test_event_data_holds_no_secret(scene: Scene) -> None:
    failed = scene.event_runs("failed-events.jsonl")
    assert_no_secret(failed, "the error.agent.run_failed event")
    assert f"http://127.0.0.1:{scene.closed_port} failed" in failed
    invalid = scene.event_runs("invalid-events.jsonl")
    assert_no_secret(invalid, "the error.config.invalid event")
    assert "'${SW_SECRET}' is not an IP address" in invalid


def test_the_log_holds_no_secret(scene: Scene) -> None:
    assert_no_secret(scene.log, "the log")
    assert "'${SW_SECRET}' is not an IP address" in scene.log
    assert f"POST http://127.0.0.1:{scene.closed_port} failed: cannot connect" in scene.log


def validate(root: Path, fmt: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "validate", "--format", fmt, str(root / "defs")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], **env},
        cwd=root,
    )
    assert proc.returncode == 1, proc
    return proc.stdout + proc.stderr


def test_validate_quotes_the_variable_and_masks_the_value_in_every_format(tmp_path: Path) -> None:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "agent.yaml").write_text(
        'agent:\n  id: poster\n  type: http\n  url: "http://example.invalid/${SW_SECRET}"\n  method: "${SW_SECRET}"\n'
    )
    (tmp_path / "defs" / "hook.yaml").write_text(
        "trigger:\n  id: hook\n  type: webhook\n  webhook:\n"
        '    ip_allowlist: ["${SW_SECRET}", "${SHORT}", "${SW_SECRET:-10.0.0.300}"]\n'
        "  agent: {id: poster}\n"
    )
    env = {"SW_SECRET": SECRET, "SHORT": "abc"}
    for fmt in ("text", "json", "github"):
        out = validate(tmp_path, fmt, env)
        assert SECRET not in out, (fmt, out)
        assert "'${SW_SECRET}' is not an IP address" in out, (fmt, out)
        assert "'${SHORT}' is not an IP address" in out, (fmt, out)  # quoted as written, even below 8 chars
        assert "'${SW_SECRET}' is not one of" in out, (fmt, out)  # a schema problem (method's enum)
    # A default written in the file is no secret: the problem quotes what the file says.
    out = validate(tmp_path, "text", {"SHORT": "abc"})
    assert "'${SW_SECRET:-10.0.0.300}' is not an IP address" in out


def test_a_short_admin_token_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "triggerd.yaml").write_text(
        f'server: {{listen: "127.0.0.1:{free_port()}"}}\ndefinitions: []\n'
        'admin:\n  tokens:\n    - "${TOKEN}"\n    - "sixteen-chars-ok"\n'
    )
    for command in ("validate", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "triggerd", command, "--config", str(tmp_path / "triggerd.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ["PATH"], "TOKEN": "fifteen-chars!!"},
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc
        out = proc.stdout + proc.stderr
        assert "triggerd.yaml:5:7: error: an admin token must be at least 16 characters long" in out, out
        assert "fifteen" not in out
    # Unset, ${TOKEN} stays as written in validate: that is the missing-variable warning, not a short token.
    unset = load(tmp_path / "triggerd.yaml", mode=LoadMode.VALIDATE, env={})
    assert [(p.severity, p.message) for p in unset.problems] == [("warning", "environment variable TOKEN is not set")]


def test_the_registry_masks_longest_first_from_eight_characters_in_strings_and_structures() -> None:
    registry = SecretRegistry()
    assert registry.mask("nothing registered") == "nothing registered"
    for value in ("short", "abcdefgh", "abcdefgh-longer", "x" * 8):
        registry.add(value)
    assert registry.mask("short abcdefgh-longer abcdefgh") == f"short {MASK} {MASK}"
    assert registry.mask_value({"abcdefgh": ["a xxxxxxxx b", 8, None], "n": 1.5}) == {
        MASK: [f"a {MASK} b", 8, None],
        "n": 1.5,
    }
    assert "short" not in registry and "abcdefgh" in registry
    # JSON text is searched as written: a secret that JSON escapes is found escaped, and masked.
    registry.add('quote"and\\slash')
    text = registry.dumps({"k": 'is quote"and\\slash', "n": 1}, indent=2)
    assert json.loads(text) == {"k": f"is {MASK}", "n": 1}


def test_what_substitution_inserts_from_the_environment_or_a_file_is_a_secret_and_a_default_is_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "credential").write_text("from-a-file-secret\n")
    env = {"SET": "from-the-environment", "DIR": str(tmp_path)}
    expansion = expand("${SET} ${UNSET:-written-default} ${file:${DIR}/credential} $${SET}", env, tmp_path)
    assert expansion.text == "from-the-environment written-default from-a-file-secret ${SET}"
    # The default is in the file for anyone to read; the path of a credential file is named in
    # messages about it. Neither is a secret.
    assert expansion.inserted == ["from-the-environment", "from-a-file-secret"]


def test_a_dry_run_prints_the_static_input_masked(tmp_path: Path) -> None:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "all.yaml").write_text(
        "agent:\n  id: worker\n  type: command\n  command: [cat]\n---\n"
        'trigger:\n  id: hook\n  type: webhook\n  webhook: {}\n  agent: {id: worker, input: {token: "${SW_SECRET}"}}\n'
    )
    (tmp_path / "triggerd.yaml").write_text("definitions: [defs]\n")
    (tmp_path / "sample.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "test", "hook", "--payload", "sample.json", "--config", "triggerd.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "SW_SECRET": SECRET},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc
    assert f'"token": "{MASK}"' in proc.stdout
    assert_no_secret(proc.stdout + proc.stderr, "triggerd test")


DEEP_OUTPUT = "import json; v = 'x'\nfor _ in range(600): v = [v]\nprint(json.dumps({'token': '${SW_SECRET}', 'v': v}))"


def test_an_output_nested_past_the_bound_is_kept_as_text_and_the_run_ends(tmp_path: Path) -> None:
    # Parsed, such an output broke the masking of the record (RecursionError) and left the run 'running'.
    text = f"agent:\n  id: deep\n  type: command\n  command: [{PY}, '-c', {json.dumps(DEEP_OUTPUT)}]\n---\n" + manual(
        "deep-run", "deep"
    )
    with running_daemon(tmp_path, text, env=ENV) as daemon:
        run = daemon.wait_run(daemon.fire("deep-run", {}))
    assert run["status"] == "completed"
    assert isinstance(run["output"], str) and run["output"].startswith('{"token": "***", "v": [[[')
