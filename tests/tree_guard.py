"""A pytest plugin: the session fails when the tests left new changes in the git checkout.

Tests must write below tmp_path (or a temporary folder), never into the repository: a cache, a
database or a build folder that shows up in `git status` gets committed by accident sooner or
later. `git status --porcelain` below the pytest root is taken at the start and at the end of the
session, and only entries that appeared in between count, so a developer's own uncommitted work
does not fail the run. Without git, or outside a git checkout, the guard does nothing. Files that
`.gitignore` names (caches such as __pycache__/ and .hypothesis/) are not changes.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

_BEFORE = pytest.StashKey[frozenset[str]]()


def _status(config: pytest.Config) -> frozenset[str] | None:
    """The porcelain status entries below the pytest root, or None when git cannot tell."""
    if shutil.which("git") is None:
        return None
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "."],
            cwd=config.rootpath,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:  # not a git checkout (or a broken one): nothing to compare
        return None
    return frozenset(entry for entry in proc.stdout.decode(errors="replace").split("\0") if entry)


def pytest_sessionstart(session: pytest.Session) -> None:
    before = _status(session.config)
    if before is not None:
        session.config.stash[_BEFORE] = before


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    after = _status(session.config)
    if after is None:
        return
    new = sorted(after - before)
    if not new:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")  # the progress line is still open
        reporter.write_sep("=", "the test session changed the git checkout (write below tmp_path instead)", red=True)
        for entry in new:
            reporter.write_line(entry, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
