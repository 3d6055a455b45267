"""systemd/triggerd.service: `systemd-analyze verify` accepts it without a warning; it asks for what SPEC 8 lists.

It must start on a machine without credentials files (a missing LoadCredential= file fails the
start), so credentials come as a drop-in example; its Documentation= names a file that the
documented install puts there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "triggerd.service"
CREDENTIALS = REPO / "systemd" / "triggerd.service.d" / "credentials.conf.example"


def directives(path: Path = UNIT) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("drop_in", [False, True], ids=["unit", "unit+credentials-drop-in"])
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path, drop_in: bool) -> None:
    triggerd = Path(sys.executable).parent / "triggerd"
    unit = tmp_path / "triggerd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/triggerd", str(triggerd)))
    if drop_in:  # verify reads drop-ins from NAME.service.d/ beside a unit given by path
        (tmp_path / "triggerd.service.d").mkdir()
        shutil.copy(CREDENTIALS, tmp_path / "triggerd.service.d" / "credentials.conf")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_the_unit_runs_as_a_hardened_notify_service() -> None:
    unit = directives()
    expected = {
        "Type": "notify",
        "DynamicUser": "yes",
        "StateDirectory": "triggerd",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for key, value in expected.items():
        assert unit[key] == [value], key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["WatchdogSec"] and unit["EnvironmentFile"] == ["-/etc/triggerd/env"]
    assert unit["ExecStart"] == ["/usr/local/bin/triggerd run --config /etc/triggerd/triggerd.yaml"]


def test_the_unit_loads_no_credential_so_it_starts_without_secret_files() -> None:
    # LoadCredential= and LoadCredentialEncrypted= fail the start when their file is missing.
    assert not [key for key in directives() if key.startswith("LoadCredential")]
    drop_in = directives(CREDENTIALS)
    assert drop_in["LoadCredential"] == ["slack-signing-secret:/etc/triggerd/credentials/slack-signing-secret"]
    assert CREDENTIALS.read_text().count("[Service]") == 1


def test_the_unit_sets_the_open_file_limit() -> None:
    assert directives()["LimitNOFILE"] == ["65536"]


def test_documentation_names_a_file_the_documented_install_puts_there(tmp_path: Path) -> None:
    (target,) = directives()["Documentation"]
    assert target.startswith("file:/"), target
    installed = Path(target.removeprefix("file:"))
    doc_dir = str(installed.parent)
    # The install line of docs/systemd.md, run as written but below tmp_path instead of /.
    (line,) = [
        line.split("#")[0].strip()
        for line in (REPO / "docs" / "systemd.md").read_text().splitlines()
        if line.startswith("sudo install") and doc_dir in line
    ]
    command = line.removeprefix("sudo ").replace(doc_dir, str(tmp_path) + doc_dir)
    subprocess.run(["sh", "-c", command], cwd=REPO, check=True, timeout=60)
    assert (tmp_path / installed.relative_to("/")).is_file()
