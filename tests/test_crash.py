"""Durability across kill -9 and SIGTERM on both stores: nothing accepted is lost, nothing runs twice (beyond
at-least-once)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from tests.harness import Daemon, running_daemon, wait_for, write_config

PY = sys.executable
WORKER = (
    "import os, sys, time; run, attempt = os.environ['TRIGGERD_RUN_ID'], os.environ['TRIGGERD_ATTEMPT']; "
    "log = open('executions.log', 'a'); log.write(f'start {run} {attempt}\\n'); log.flush(); "
    "time.sleep(0.6); log.write(f'end {run} {attempt}\\n'); log.flush(); print('{}')"
)


def definitions(root: Path) -> str:
    return f"""\
agent:
  id: worker
  type: command
  command: [{json.dumps(PY)}, "-c", {json.dumps(WORKER)}]
  working_dir: {root}
---
trigger:
  id: work
  type: event
  event: {{pattern: never}}
  agent: {{id: worker}}
  max_concurrent: 10
  retry: {{max_attempts: 3, backoff: 1s, max_backoff: 1s}}
"""


def executions(root: Path) -> tuple[Counter[str], Counter[str]]:
    starts: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    log = root / "executions.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, run_id, _ = line.split()
        (starts if kind == "start" else ends)[run_id] += 1
    return starts, ends


def test_kill_9_mid_run_loses_nothing_and_reruns_only_interrupted_attempts(tmp_path: Path, store_url: str) -> None:
    port = write_config(tmp_path, definitions(tmp_path), "limits:\n  max_concurrent_runs: 3\n", store=store_url)
    env = {"PATH": os.environ["PATH"]}
    daemon = Daemon(tmp_path, port, env).start()
    try:
        ids = [daemon.fire("work") for _ in range(9)]
        wait_for(lambda: executions(tmp_path)[1].total() >= 2, timeout=15, what="two runs to finish")
    finally:
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(0.8)  # let the orphaned attempts finish writing: they are the at-least-once duplicates

    restarted = Daemon(tmp_path, port, env).start()
    try:
        runs = {run_id: restarted.wait_run(run_id, timeout=30) for run_id in ids}
    finally:
        restarted.stop()

    assert {run["status"] for run in runs.values()} == {"completed"}
    starts, ends = executions(tmp_path)
    interrupted = [r for r in runs.values() if any(a["error"] == "interrupted" for a in r["attempts"])]
    assert interrupted, "the kill landed between runs; the test proved nothing"
    for run_id, run in runs.items():
        attempts = run["attempts"]
        interrupted_attempts = sum(a["error"] == "interrupted" for a in attempts)
        # Every execution is a recorded attempt; an interrupted attempt may never have started its
        # process (the kill can land between recording the start and spawning the command).
        assert len(attempts) - interrupted_attempts <= starts[run_id] <= len(attempts), run
        assert attempts[-1]["status"] == "completed"
        assert [a["status"] for a in attempts[:-1]] == ["failed"] * (len(attempts) - 1)
        assert all(a["error"] == "interrupted" for a in attempts[:-1])
        assert 1 <= ends[run_id] <= len(attempts)
    untouched = [r for r in runs.values() if len(r["attempts"]) == 1]
    assert all(ends[r["id"]] == 1 for r in untouched)


def test_sigterm_cancels_what_outlives_the_grace_and_the_next_start_resumes_it(tmp_path: Path, store_url: str) -> None:
    slow = json.dumps("import time; time.sleep(30)")
    defs = (
        f"agent:\n  id: slow\n  type: command\n  command: [{json.dumps(PY)}, '-c', {slow}]\n---\n"
        "trigger:\n  id: slow\n  type: event\n  event: {pattern: never}\n  agent: {id: slow}\n"
        "  timeout_seconds: 3\n"
    )
    with running_daemon(tmp_path, defs, "limits:\n  shutdown_grace_seconds: 1\n", store=store_url) as daemon:
        run_id = daemon.wait_run(daemon.fire("slow"), {"running"})["id"]
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        wait_for(lambda: (answer := _readyz(daemon)) is not None and answer[0] == 503, timeout=5, what="503")
        assert daemon.process.wait(15) == 0  # type: ignore[union-attr]
        assert time.monotonic() - started < 8
        lines = daemon.log_lines()
        daemon.start()
        resumed = daemon.wait_run(run_id, timeout=15)
    cancelled = [line for line in lines if line.get("run_id") == run_id and line.get("status") == "cancelled"]
    assert cancelled and cancelled[-1]["message"] == "run cancelled (shutdown)"
    assert [a["status"] for a in resumed["attempts"]] == ["cancelled", "timed_out"]
    assert resumed["status"] == "timed_out"


def _readyz(daemon: Daemon) -> tuple[int, object] | None:
    from tests.harness import http

    try:
        return http("GET", daemon.url + "/readyz")
    except OSError:
        return None
