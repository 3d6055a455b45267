"""docs/maintenance.md: its backup commands copy a live store consistently, the copy restores,
and a daemon refuses a store newer than it knows (issue 14)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

from tests.conftest import REPO
from tests.harness import Daemon, running_daemon, wait_for
from triggerd.store.migrations import MIGRATIONS

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger: {id: hook, type: webhook, webhook: {}, agent: {id: echo}}
"""
DOC_STORE = "/var/lib/triggerd/triggerd.db"
DOC_BACKUPS = "/var/backups/triggerd/"


def backup_commands() -> list[str]:
    """The documented backup command lines, as printed in docs/maintenance.md."""
    lines = (REPO / "docs" / "maintenance.md").read_text().splitlines()
    commands = [line for line in lines if line.startswith("sudo ") and "VACUUM INTO" in line]
    assert len(commands) == 2, commands  # the sqlite3 CLI and the Python module
    return commands


def run_documented(command: str, store: Path, backups: Path) -> Path:
    backups.mkdir()
    line = command.removeprefix("sudo ").replace(DOC_STORE, str(store)).replace(DOC_BACKUPS, f"{backups}/")
    subprocess.run(["sh", "-c", line], check=True, timeout=60, capture_output=True)
    (copy,) = backups.glob("*.db")
    return copy


def test_the_documented_backup_of_a_live_store_is_consistent_and_restores(tmp_path: Path) -> None:
    commands = backup_commands()
    if shutil.which("sqlite3") is None:
        commands = [c for c in commands if not c.startswith("sudo sqlite3")]
    store = tmp_path / "daemon" / "state" / "triggerd.db"
    with running_daemon(tmp_path / "daemon", DEFS) as daemon:
        before = [daemon.fire("hook", {"n": n}) for n in range(20)]
        for run_id in before:
            assert daemon.wait_run(run_id)["status"] == "completed"
        # The daemon keeps committing runs while the copies are taken.
        stop = threading.Event()
        during: list[str] = []

        def keep_firing() -> None:
            while not stop.is_set():
                during.append(daemon.fire("hook", {"during": True}))

        writer = threading.Thread(target=keep_firing)
        writer.start()
        try:
            wait_for(lambda: len(during) >= 5, timeout=20, what="runs fired during the backup")
            copies = [run_documented(c, store, tmp_path / f"backup-{i}") for i, c in enumerate(commands)]
        finally:
            stop.set()
            writer.join(timeout=30)
        assert during and not writer.is_alive()
        total = len(before) + len(during)
        assert (store.parent / "triggerd.db-wal").exists()  # the copies were taken from a live WAL store

    for copy in copies:
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
            count = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
            done = {row[0] for row in conn.execute("SELECT id FROM runs WHERE status = 'completed'")}
        conn.close()
        assert len(before) < count <= total
        assert set(before) <= done

    # Restore as documented: stopped daemon, -wal/-shm removed, the copy in place of the store.
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    shutil.copy(copies[-1], store)
    restored = Daemon(daemon.root, daemon.port, daemon.env)
    try:
        restored.start()
        for run_id in before:
            run = restored.run(run_id)
            assert (run["status"], run["input"]) == ("completed", {"n": before.index(run_id)})
    finally:
        restored.stop()


def test_a_daemon_refuses_a_store_written_by_a_newer_triggerd(tmp_path: Path) -> None:
    """The rollback advice in docs/maintenance.md rests on this: restore the backup, never guess."""
    with running_daemon(tmp_path, DEFS) as daemon:
        daemon.fire("hook")
    store = tmp_path / "state" / "triggerd.db"
    conn = sqlite3.connect(store)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    newer = Daemon(daemon.root, daemon.port, daemon.env).start(ready=False)
    assert newer.process is not None
    try:
        assert newer.process.wait(timeout=30) == 1
    finally:
        newer.stop()  # only does something when the daemon did start
    message = f"store schema version {len(MIGRATIONS) + 1} is newer than this triggerd knows ({len(MIGRATIONS)})"
    assert message in newer.log.read_text()
    if shutil.which("sqlite3") is not None:  # the documented check of the schema version
        shown = subprocess.run(
            ["sqlite3", str(store), "PRAGMA user_version"], capture_output=True, text=True, timeout=30, check=True
        )
        assert shown.stdout.strip() == str(len(MIGRATIONS) + 1)


def test_the_readme_names_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"docs/{p.name}" not in readme] == []
