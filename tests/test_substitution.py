"""${NAME}, ${NAME:-default}, ${file:PATH} and $${ (SPEC 2.3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AGENT, Write, found, load_dir
from triggerd.config.loader import LoadMode
from triggerd.config.substitution import expand
from triggerd.errors import SubstitutionError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("x-${A}-y", "x-alpha-y"),
        ("${NOPE:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${NOPE:-}", ""),
        ("${NOPE:-${A}}", "alpha"),
        ("$${A}", "${A}"),
        ("$$${A}", "$${A}"),  # read left to right: "$", then the escape "$${"
        ("price: $5", "price: $5"),
        ("$.body.text", "$.body.text"),
    ],
)
def test_expansion(tmp_path: Path, text: str, expected: str) -> None:
    result = expand(text, {"A": "alpha", "EMPTY": ""}, tmp_path)
    assert (result.text, result.missing) == (expected, [])


def test_file_substitution_strips_the_trailing_newline_and_nests(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "slack").write_text("s3cret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    assert expand("${file:${CREDENTIALS_DIRECTORY}/slack}", env, Path("/")).text == "s3cret"
    assert expand("${file:creds/slack}", {}, tmp_path).text == "s3cret"


def test_missing_things_are_listed(tmp_path: Path) -> None:
    result = expand("${A}/${file:nope.txt}", {}, tmp_path)
    assert result.missing == [
        "environment variable A is not set",
        "file nope.txt cannot be read (No such file or directory)",
    ]


def test_a_variable_used_twice_in_one_string_is_one_problem(tmp_path: Path) -> None:
    assert expand("echo ${S} >&2; echo ${S} ${T}", {}, tmp_path).missing == [
        "environment variable S is not set",
        "environment variable T is not set",
    ]


@pytest.mark.parametrize("text", ["${}", "${A B}", "${A-default}", "${unterminated", "${file:${X}"])
def test_malformed_substitutions_raise(tmp_path: Path, text: str) -> None:
    with pytest.raises(SubstitutionError):
        expand(text, {"X": "x"}, tmp_path)


def test_malformed_substitution_is_a_located_error(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT.replace('["cat"]', '["cat", "${A B}"]'))
    assert found(load_dir(tmp_path)) == [
        (
            str(tmp_path / "agents.yaml"),
            4,
            "error",
            "invalid substitution '${A B}' (use ${NAME}, ${NAME:-default} or ${file:PATH})",
        )
    ]


def test_a_plain_substituted_scalar_is_typed_again(write: Write, tmp_path: Path) -> None:
    write("a.yaml", AGENT + '  max_concurrent: ${N}\n  description: "${N}"\n')
    result = load_dir(tmp_path, env={"N": "3"})
    assert result.problems == []
    assert result.configuration is not None
    agent = result.configuration.agents["worker"]
    assert (agent.max_concurrent, agent.description) == (3, "3")


WEBHOOK = """\
trigger:
  id: hook
  type: webhook
  webhook:
    authentication: {type: bearer, secret: "${HOOK_TOKEN}"}
  agent: {id: worker}
"""


def test_missing_variable_warns_for_validate_and_keeps_the_definition(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", WEBHOOK)
    result = load_dir(tmp_path)
    assert found(result) == [(str(path), 5, "warning", "environment variable HOOK_TOKEN is not set")]
    assert result.configuration is not None and "hook" in result.configuration.triggers


def test_missing_variable_keeps_the_definition_out_of_the_daemon(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", WEBHOOK)
    result = load_dir(tmp_path, mode=LoadMode.DAEMON)
    assert found(result) == [(str(path), 5, "error", "environment variable HOOK_TOKEN is not set")]
    assert result.configuration is not None and result.configuration.triggers == {}
    assert "worker" in result.configuration.agents


def test_substituted_secrets_never_appear_in_validation_output(write: Write, tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    write(
        "agents.yaml",
        AGENT + '  max_concurrent: "${SECRET}"\n  working_dir: ${SECRET}\n  max_output_bytes: ${SECRET}\n',
    )
    for fmt in ("text", "json", "github"):
        proc = subprocess.run(
            [sys.executable, "-m", "triggerd", "validate", str(tmp_path), "--format", fmt, "--strict"],
            capture_output=True,
            text=True,
            env={"SECRET": secret, "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert proc.returncode == 1
        assert secret not in proc.stdout + proc.stderr
        assert "${SECRET}" in proc.stdout
    problems = json.loads(
        subprocess.run(
            [sys.executable, "-m", "triggerd", "validate", str(tmp_path), "--format", "json"],
            capture_output=True,
            text=True,
            env={"SECRET": secret},
            check=False,
        ).stdout
    )["problems"]
    assert [p["line"] for p in problems] == [5, 7]
