"""Which problems of a new load block a reload (SPEC 8), on real files, without a daemon.

The daemon tests in tests/test_reload.py show the rule end to end; these pin its corners.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import AGENT, Write, load_dir
from triggerd.config.applied import Applied
from triggerd.config.loader import LoadMode, LoadResult

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def hook(trigger_id: str, endpoint: str, agent: str = "worker") -> str:
    return f"trigger: {{id: {trigger_id}, type: webhook, webhook: {{endpoint: {endpoint}}}, agent: {{id: {agent}}}}}\n"


def applied(folder: Path) -> Applied:
    return Applied(load(folder), NOW)


def load(folder: Path) -> LoadResult:
    return load_dir(folder, mode=LoadMode.DAEMON)


def blocking(running: Applied, folder: Path) -> list[str]:
    return [str(p) for p in running.blocking(load(folder))]


def test_a_new_file_that_takes_an_unchanged_triggers_id_is_rejected(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    kept = write("b.yaml", hook("shared", "/hooks/b"))
    running = applied(tmp_path)
    # a.yaml comes first, so it would keep the id and b.yaml's running trigger would drop out.
    new = write("a.yaml", hook("shared", "/hooks/a"))
    assert running.changed(load(tmp_path)) == {str(new)}
    assert blocking(running, tmp_path) == [
        f"{kept}:1:15: error: duplicate trigger id 'shared' (also defined at {new}:1) (at /trigger/id)"
    ]


def test_a_new_file_that_takes_an_unchanged_triggers_route_is_rejected(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    kept = write("b.yaml", hook("b", "/hooks/x"))
    running = applied(tmp_path)
    new = write("a.yaml", hook("a", "/hooks/x"))
    assert blocking(running, tmp_path) == [
        f"{kept}:1:53: error: POST /hooks/x is already the endpoint of trigger 'a' ({new}:1) "
        "(at /trigger/webhook/endpoint)"
    ]


def test_a_file_that_failed_when_applied_and_is_unchanged_blocks_nothing(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    failing = write("failing.yaml", hook("f", "/v1/no"))
    write("good.yaml", hook("g", "/hooks/g"))
    running = applied(tmp_path)
    assert [p.file for p in running.result.errors] == [str(failing)]
    write("good.yaml", hook("g", "/hooks/g2"))
    assert blocking(running, tmp_path) == []
    # Losing the agent it names makes it fail twice over, but it was out already: nothing runs less.
    write("agents.yaml", AGENT.replace("worker", "other"))
    write("good.yaml", hook("g", "/hooks/g2", agent="other"))
    assert blocking(running, tmp_path) == []


def test_the_same_bytes_again_are_no_change(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    failing = write("failing.yaml", hook("f", "/v1/no"))
    running = applied(tmp_path)
    failing.write_text(failing.read_text())  # touched, rewritten, same content
    assert running.changed(load(tmp_path)) == set()
    failing.write_text(failing.read_text() + "# a comment is a change\n")
    assert [p.split(": error")[0] for p in blocking(running, tmp_path)] == [f"{failing}:1:53"]


def test_a_deleted_file_is_a_change(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    gone = write("gone.yaml", hook("gone", "/hooks/gone"))
    running = applied(tmp_path)
    gone.unlink()
    assert running.changed(load(tmp_path)) == {str(gone)}
    assert blocking(running, tmp_path) == []  # removing a definition is what the operator asked for
