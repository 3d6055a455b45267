from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from triggerd.config.loader import LoadMode, LoadResult, load

# The session fails when a test leaves new changes in the git checkout (see tests/tree_guard.py);
# daemons that must see a minute boundary pass start with the session (see tests/wall_clock.py).
pytest_plugins = ["tests.tree_guard", "tests.servers", "tests.wall_clock"]

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent

AGENT = """\
agent:
  id: worker
  type: command
  command: ["cat"]
"""

Write = Callable[[str, str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write dedented YAML text to a file below tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


def load_dir(folder: Path, env: Mapping[str, str] | None = None, mode: LoadMode = LoadMode.VALIDATE) -> LoadResult:
    return load(None, paths=[folder], mode=mode, env=dict(env or {}))


def found(result: LoadResult) -> list[tuple[str, int, str, str]]:
    """(file, line, severity, message) of every problem, in report order."""
    return [(p.file, p.line, str(p.severity), p.message) for p in result.problems]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for each kind of store: a fresh SQLite file, and a fresh PostgreSQL database.

    Tests that take it run once per store: the same contract, the same behaviour (SPEC 10).
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'triggerd.db'}"
    return str(request.getfixturevalue("postgres_url"))
