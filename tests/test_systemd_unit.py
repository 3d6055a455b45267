"""systemd/triggerd.service: `systemd-analyze verify` accepts it without a warning; it asks for what SPEC 8 lists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "triggerd.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    triggerd = Path(sys.executable).parent / "triggerd"
    unit = tmp_path / "triggerd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/triggerd", str(triggerd)))
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
    assert unit["WatchdogSec"] and unit["EnvironmentFile"] and unit["LoadCredential"]
    assert unit["ExecStart"] == ["/usr/local/bin/triggerd run --config /etc/triggerd/triggerd.yaml"]
