"""Fault injection at the file-system level (issue 8): a full disk, a locked database, a read-only disk.

The full disk is a size-limited tmpfs mounted under the test's directory and filled with a file;
the lock is an exclusive SQLite transaction held by another connection. Tests run as root, so
file permission bits would prove nothing. A disk cannot be remounted read-only while the daemon
holds its database open for writing (the kernel answers EBUSY), so a read-only disk is shown at
start-up here; read-only mid-run is injected at the store boundary in test_faults.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.harness import Daemon, http, running_daemon, wait_for, write_config
from tests.test_store import new_run
from triggerd.errors import StoreError
from triggerd.store.sqlite import SqliteStore

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
agent: {id: slow, type: command, command: [sleep, "1"]}
---
trigger: {id: hook, type: webhook, webhook: {}, agent: {id: echo}}
---
trigger: {id: long, type: event, event: {pattern: never}, agent: {id: slow}}
"""


@contextmanager
def small_disk(path: Path, size: str, options: str = "") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (skips where this machine does not allow mounting)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no space left."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    with filler.open("ab", buffering=0) as out, suppress(OSError):
        while True:
            out.write(b"\0")
    return filler


def post(daemon: Daemon, body: object) -> tuple[int, dict[str, object]]:
    status, answer = http("POST", daemon.url + "/webhooks/hook", body)
    return status, dict(answer)


def test_a_full_disk_answers_503_and_loses_nothing_accepted_once_space_returns(tmp_path: Path) -> None:
    with small_disk(tmp_path / "state", "2m") as disk, running_daemon(tmp_path, DEFS) as daemon:
        accepted = [str(post(daemon, {"n": 0})[1]["run_id"])]
        in_flight = daemon.fire("long")  # its outcome arrives while the disk is full
        daemon.wait_run(in_flight, {"running"})
        filler = fill(disk)
        refused = []
        for n in range(1, 40):  # a large payload needs new pages, which a full disk cannot give
            status, answer = post(daemon, {"n": n, "pad": "x" * 20_000})
            if status == 202:
                accepted.append(str(answer["run_id"]))
            else:
                refused.append((status, answer))
                break
        assert refused == [(503, {"error": "temporarily unavailable"})]
        status, ready = http("GET", daemon.url + "/readyz")
        assert status == 503
        assert any("database or disk is full" in problem for problem in ready["problems"]), ready
        time.sleep(1.5)  # the slow run ends now, and its outcome cannot be written yet
        assert daemon.run(in_flight)["status"] == "running"

        filler.unlink()
        wait_for(lambda: http("GET", daemon.url + "/readyz")[0] == 200, timeout=10, what="/readyz to recover")
        status, answer = post(daemon, {"n": 99, "pad": "x" * 20_000})
        assert status == 202
        accepted.append(str(answer["run_id"]))
        assert daemon.wait_run(in_flight, timeout=10)["status"] == "completed"  # no restart needed
        for run_id in accepted:
            assert daemon.wait_run(run_id)["status"] == "completed"
        status, page = daemon.request("GET", "/v1/runs?trigger=hook&limit=100")
        assert status == 200
        assert sorted(run["id"] for run in page["runs"]) == sorted(accepted)  # each 202 once, nothing else


def test_a_lock_shorter_than_the_busy_timeout_only_delays_webhooks(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DEFS) as daemon:
        post(daemon, {"n": 0})
        holder = sqlite3.connect(tmp_path / "state" / "triggerd.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        answers: list[tuple[int, dict[str, object], float]] = []

        def send(n: int) -> None:
            began = time.monotonic()
            status, answer = post(daemon, {"n": n})
            answers.append((status, answer, time.monotonic() - began))

        senders = [threading.Thread(target=send, args=(n,)) for n in range(1, 4)]
        for sender in senders:
            sender.start()
        time.sleep(1.0)
        assert http("GET", daemon.url + "/readyz")[0] == 200  # readers are not blocked in WAL mode
        assert answers == []  # the writes wait for the lock
        holder.execute("ROLLBACK")
        holder.close()
        for sender in senders:
            sender.join(10)
        assert sorted(status for status, _, _ in answers) == [202, 202, 202]
        assert min(waited for _, _, waited in answers) >= 0.9
        for _, answer, _ in answers:
            assert daemon.wait_run(str(answer["run_id"]))["status"] == "completed"


def test_a_lock_longer_than_the_busy_timeout_fails_the_write_and_readiness_until_released(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        store = SqliteStore(tmp_path / "store.db", busy_timeout=0.2)
        await store.open()
        seen = []
        holder = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            run = new_run()
            with pytest.raises(StoreError) as refused:
                await store.create_run(run)
            seen.append(str(refused.value))
            with pytest.raises(StoreError) as unready:
                await store.ping()
            seen.append(str(unready.value))
            holder.execute("ROLLBACK")
            await store.ping()
            seen.append("ready")
            created = await store.create_run(run)
            stored = await store.get_run(created.run_id)
            seen.append(stored.input["n"] if stored is not None else "lost")
        finally:
            holder.close()
            await store.close()
        return seen

    assert asyncio.run(scenario()) == [
        "store commit failed: database is locked",
        "store commit failed: database is locked",
        "ready",
        1,
    ]


def test_a_read_only_disk_stops_the_daemon_at_start_with_a_clear_error(tmp_path: Path) -> None:
    write_config(tmp_path, DEFS)
    with small_disk(tmp_path / "state", "1m", ",ro"):
        started = subprocess.run(
            [sys.executable, "-m", "triggerd", "run", "--config", str(tmp_path / "triggerd.yaml")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert started.returncode == 1
    assert "cannot open store" in started.stderr
    assert "(the file system is mounted read-only)" in started.stderr, started.stderr
