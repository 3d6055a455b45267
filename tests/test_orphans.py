"""A crashed daemon's command agents never run beside their own retry (SPEC 5.2): real processes, a real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from tests.harness import Daemon, pid_alive, wait_for, write_config
from triggerd.agents.process_group import end_if_ours, identify, is_ours

PY = sys.executable

# Reads its input first (the daemon feeds stdin only once the process group is recorded), then
# starts a child in its own process group, writes both pids, and parks.
PARKED_AGENT = """\
import os, subprocess, sys, time
sys.stdin.read()
child = subprocess.Popen(["sleep", "300"])
with open("pids.log", "a") as log:
    log.write(f"{os.environ['TRIGGERD_ATTEMPT']} {os.getpid()} {child.pid}\\n")
time.sleep(300)
"""


def spawn(*code: str) -> tuple[subprocess.Popen[bytes], str]:
    """A Python process leading its own session and process group, as the command agent starts one,
    and the first line it printed (it prints one once set up)."""
    process = subprocess.Popen([PY, "-c", "\n".join(code)], stdout=subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None
    return process, process.stdout.readline().decode().strip()


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def test_a_group_is_ours_only_with_the_same_pid_start_time_and_boot() -> None:
    process, _ = spawn("import time", "print(flush=True)", "time.sleep(60)")
    try:
        group = wait_for(lambda: identify(process.pid, parent=os.getpid()), timeout=5, what="the process record")
        with open(f"/proc/{process.pid}/stat") as stat:
            assert group.start_ticks == int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/sys/kernel/random/boot_id") as boot:
            assert group.boot_id == boot.read().strip()
        assert group.pgid == process.pid
        assert is_ours(group)
        # What a pid reused by another process looks like: the same id, another start time.
        reused = replace(group, start_ticks=group.start_ticks + 1)
        assert not is_ours(reused)
        assert not is_ours(replace(group, boot_id="another-boot"))
        assert identify(process.pid, parent=process.pid) is None  # not that process's child
        assert asyncio.run(end_if_ours(reused, grace=0.5)) is None
        assert asyncio.run(end_if_ours(replace(group, boot_id="another-boot"), grace=0.5)) is None
        assert pid_alive(process.pid), "a process that only shares the id was signalled"

        assert asyncio.run(end_if_ours(group, grace=5)) == "terminated"
        assert process.wait(timeout=5) == -signal.SIGTERM
        assert asyncio.run(end_if_ours(group, grace=0.5)) is None  # gone: nothing to end
    finally:
        stop(process)


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    process, child = spawn(
        "import signal, subprocess, time",
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "print(subprocess.Popen(['sleep', '60']).pid, flush=True)",  # the child inherits SIG_IGN
        "time.sleep(60)",
    )
    try:
        group = wait_for(lambda: identify(process.pid, parent=os.getpid()), timeout=5, what="the process record")
        assert asyncio.run(end_if_ours(group, grace=0.5)) == "killed"
        assert process.wait(timeout=5) == -signal.SIGKILL
        assert not pid_alive(int(child)), "the leader's child survived"
    finally:
        stop(process)


def parked_definitions(root: Path) -> str:
    (root / "parked.py").write_text(PARKED_AGENT)
    return textwrap.dedent(f"""\
        agent:
          id: parked
          type: command
          command: [{json.dumps(PY)}, {json.dumps(str(root / "parked.py"))}]
          working_dir: {json.dumps(str(root))}
        ---
        trigger:
          id: park
          type: event
          event: {{pattern: never}}
          agent: {{id: parked}}
          retry: {{max_attempts: 2, backoff: 1s}}
        """)


def logged_pids(root: Path) -> dict[str, tuple[int, int]]:
    """attempt number -> (agent pid, its child's pid), as each attempt wrote them."""
    log = root / "pids.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return {attempt: (int(leader), int(child)) for attempt, leader, child in (line.split() for line in lines)}


def stored_process(root: Path, run_id: str, number: int) -> tuple[int | None, int | None, str | None]:
    with contextlib.closing(sqlite3.connect(root / "state" / "triggerd.db")) as db:
        row = db.execute(
            "SELECT pgid, pgid_start_ticks, boot_id FROM attempts WHERE run_id = ? AND number = ?", (run_id, number)
        ).fetchone()
    return (row[0], row[1], row[2]) if row else (None, None, None)


def test_a_restart_after_kill_9_ends_the_interrupted_attempt_before_its_retry(tmp_path: Path) -> None:
    port = write_config(tmp_path, parked_definitions(tmp_path), "limits:\n  shutdown_grace_seconds: 0\n")
    env = {"PATH": os.environ["PATH"]}
    daemons: list[Daemon] = []
    try:
        daemons.append(Daemon(tmp_path, port, env).start())
        run_id = daemons[0].fire("park")
        first = wait_for(lambda: logged_pids(tmp_path).get("1"), timeout=15, what="attempt 1 to start")
        # The agent read its input, so its process group was recorded before (SPEC 5.2).
        pgid, ticks, boot = stored_process(tmp_path, run_id, 1)
        assert pgid == first[0]
        assert ticks is not None and boot is not None
        assert daemons[0].stop(signal.SIGKILL) == -signal.SIGKILL
        assert pid_alive(first[0]) and pid_alive(first[1]), "the agent died with the daemon: nothing to show"

        daemons.append(Daemon(tmp_path, port, env).start())
        second = wait_for(lambda: logged_pids(tmp_path).get("2"), timeout=20, what="the retry to start")
        assert set(first).isdisjoint(second)
        alive = [pid for pid in first if pid_alive(pid)]
        assert not alive, f"attempt 1's processes {alive} still run beside the retry"

        run = daemons[1].run(run_id)
        assert run["status"] == "running"
        assert [(a["number"], a["status"], a["error"]) for a in run["attempts"]] == [
            (1, "failed", "interrupted"),
            (2, "running", None),
        ]
        ended = [line for line in daemons[1].log_lines() if "interrupted attempt" in line["message"]]
        assert [line["message"] for line in ended] == [
            f"process group {first[0]} of interrupted attempt 1 was still running: terminated"
        ]
        assert ended[0]["run_id"] == run_id
    finally:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=10)
        for leader, _ in logged_pids(tmp_path).values():  # each agent leads a group holding its child
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader, signal.SIGKILL)
