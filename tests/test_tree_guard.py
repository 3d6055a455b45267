"""tests/tree_guard.py fails a session that litters the checkout, and only then (issue 14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

LITTER = "from pathlib import Path\n\ndef test_litter() -> None:\n    Path('litter.txt').write_text('x')\n"
CLEAN = "def test_clean() -> None:\n    pass\n"


def project(root: Path, test: str, git: bool = True) -> Path:
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (root / "test_it.py").write_text(test)
    (root / "notes.txt").write_text("committed\n")
    if git:
        for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "start"]):
            subprocess.run(
                ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                cwd=root,
                check=True,
                capture_output=True,
                timeout=60,
            )
    return root


def pytest_in(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.tree_guard", "test_it.py"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # Without the installed plugins (schemathesis, hypothesis) a run starts in a fraction of a second.
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        },
    )


def test_a_file_left_in_the_checkout_fails_the_session_and_is_named(tmp_path: Path) -> None:
    proc = pytest_in(project(tmp_path / "repo", LITTER))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "changed the git checkout" in proc.stdout and "?? litter.txt" in proc.stdout


def test_uncommitted_work_from_before_the_session_is_not_blamed_on_the_tests(tmp_path: Path) -> None:
    root = project(tmp_path / "repo", CLEAN)
    (root / "notes.txt").write_text("edited, not committed\n")
    (root / "draft.txt").write_text("new, not added\n")
    proc = pytest_in(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed the git checkout" not in proc.stdout


def test_outside_a_git_checkout_the_guard_does_nothing(tmp_path: Path) -> None:
    proc = pytest_in(project(tmp_path / "plain", LITTER, git=False))
    assert proc.returncode == 0, proc.stdout + proc.stderr
