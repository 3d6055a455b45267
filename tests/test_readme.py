"""README.md's "A first trigger in five minutes", walked against a real daemon (issue 14).

The trigger file, the token, the validate output and the commands are read from the README
itself, so the test breaks when the README drifts from what the code does. Only the port
differs: the daemon listens on a free one instead of 8080.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO
from tests.harness import Daemon, free_port, http

README = (REPO / "README.md").read_text()
_START = README.index("## A first trigger")
SECTION = README[_START : README.index("\n## ", _START)]
BLOCKS = [
    (lang, textwrap.dedent(body))
    for lang, body in re.findall(r"^ *```(\w*)\n(.*?)^ *```", SECTION, flags=re.MULTILINE | re.DOTALL)
]
(GREET,) = [body for lang, body in BLOCKS if lang == "yaml" and "/webhooks/greet" in body]
(VALIDATE_OUTPUT,) = [body for lang, body in BLOCKS if lang == "" and "greet.yaml:" in body]
COMMANDS = [line for lang, body in BLOCKS if lang == "sh" for line in body.splitlines() if line.strip()]
TOKEN_LINE = re.compile(r"^export GREET_TOKEN=(\S+)", flags=re.MULTILINE)
TRIGGERD = f"{sys.executable} -m triggerd"


def project(tmp_path: Path, greet: str = GREET) -> tuple[Path, int]:
    """A copy of config/ with greet.yaml added as printed, listening on a free port."""
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config, ignore=shutil.ignore_patterns(".triggerd", "*.log"))
    (config / "triggers" / "greet.yaml").write_text(greet)
    port = free_port()
    settings = config / "triggerd.yaml"
    assert '"127.0.0.1:8080"' in settings.read_text()
    settings.write_text(settings.read_text().replace('"127.0.0.1:8080"', f'"127.0.0.1:{port}"'))
    return config, port


def greet_token() -> str:
    """The value step 4 exports."""
    match = TOKEN_LINE.search("\n".join(COMMANDS))
    assert match is not None, "the README no longer exports GREET_TOKEN"
    return match[1]


def env(token: bool = True) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **({"GREET_TOKEN": greet_token()} if token else {})}


def sh(command: str, cwd: Path, port: int) -> subprocess.CompletedProcess[str]:
    """One README command line, as printed, against the test's daemon."""
    line = command.replace(".venv/bin/triggerd", TRIGGERD).replace("localhost:8080", f"127.0.0.1:{port}")
    return subprocess.run(["sh", "-c", line], cwd=cwd, env=env(), capture_output=True, text=True, timeout=60)


def command(*needles: str) -> str:
    (line,) = [line for line in COMMANDS if all(n in line for n in needles)]
    return line


def test_step_3_prints_what_the_readme_shows(tmp_path: Path) -> None:
    config, _ = project(tmp_path, GREET.replace("id: echo ", "id: ecko "))
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "validate"],
        cwd=config.parent,
        env=env(token=False),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout + proc.stderr == VALIDATE_OUTPUT


def test_the_first_trigger_flow_against_a_real_daemon(tmp_path: Path) -> None:
    config, port = project(tmp_path)
    listed = sh(command("triggerd list"), config.parent, port)
    assert listed.returncode == 0, listed.stderr
    ids = {row.split()[0] for row in listed.stdout.splitlines()[1:]}
    promised = re.search(r"# ([\w-]+(?:, [\w-]+)*) and ([\w-]+)$", command("triggerd list"))
    assert promised is not None and ids == {*promised[1].split(", "), promised[2]}

    daemon = Daemon(config, port, env())
    try:
        daemon.start()
        accepted = sh(command("/webhooks/greet", "Bearer"), config.parent, port)
        answer = json.loads(accepted.stdout)
        assert (answer["trigger_id"], answer["status"]) == ("greet", "pending"), answer
        run = daemon.wait_run(answer["run_id"])
        assert (run["status"], run["input"], run["output"]) == ("completed", {"who": "Ada"}, {"who": "Ada"})

        refused = sh(command("/webhooks/greet", "no token"), config.parent, port)
        assert refused.stdout.strip() == "401"
        assert http("POST", daemon.url + "/webhooks/greet", {"name": "Ada"}, {"Authorization": "Bearer nope"})[0] == 401

        fired = sh(command("triggerd fire hello"), config.parent, port)
        hello_id, status = fired.stdout.split()
        assert status == "pending" and daemon.wait_run(hello_id)["status"] == "completed"

        runs = sh(command("triggerd runs"), config.parent, port).stdout
        assert re.search(rf"^{answer['run_id']}\s+completed\s+greet\b", runs, flags=re.MULTILINE), runs
        shown = json.loads(
            sh(command("triggerd show RUN_ID").replace("RUN_ID", answer["run_id"]), config.parent, port).stdout
        )
        assert (shown["input"], shown["output"], len(shown["attempts"])) == ({"who": "Ada"}, {"who": "Ada"}, 1)

        triggers = json.loads(sh(command("/v1/triggers"), config.parent, port).stdout)
        assert {t["id"] for t in triggers["triggers"]} == ids
    finally:
        daemon.stop()
    assert greet_token() not in daemon.log.read_text()


def test_without_the_token_the_daemon_leaves_greet_out(tmp_path: Path) -> None:
    config, port = project(tmp_path)
    daemon = Daemon(config, port, env(token=False))
    try:
        daemon.start()
        assert http("POST", daemon.url + "/webhooks/greet", {"name": "Ada"})[0] == 404
        assert http("POST", daemon.url + "/webhooks/hello", {"name": "Ada"})[0] == 202
    finally:
        daemon.stop()
    assert "GREET_TOKEN" in daemon.log.read_text()
