"""Runs through the real daemon: fire, timeouts, retries, dead letters, overlap, limits, cancel (SPEC 5, 7.2)."""

from __future__ import annotations

import itertools
import json
import sys
from datetime import datetime
from pathlib import Path

from tests.harness import pid_alive, running_daemon, wait_for

PY = sys.executable


def command_agent(agent_id: str, script: str, extra: str = "") -> str:
    return (
        f"agent:\n  id: {agent_id}\n  type: command\n"
        f"  command: [{json.dumps(PY)}, '-c', {json.dumps(script)}, '{{{{ tag }}}}']\n{extra}"
    )


def manual_trigger(trigger_id: str, agent_id: str, extra: str = "") -> str:
    return (
        f"trigger:\n  id: {trigger_id}\n  type: event\n  enabled: false\n  event: {{pattern: never}}\n"
        f"  agent: {{id: {agent_id}, input: {{tag: static}}}}\n" + "".join(f"  {line}\n" for line in extra.splitlines())
    )


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


ECHO = (
    "import json, os, sys; data = json.load(sys.stdin); "
    "print(json.dumps({'input': data, 'arg': sys.argv[1], 'run': os.environ['TRIGGERD_RUN_ID'], "
    "'attempt': os.environ['TRIGGERD_ATTEMPT'], 'trigger': os.environ['TRIGGERD_TRIGGER_ID'], "
    "'secret_env': 'ANTHROPIC_API_KEY' in os.environ}))"
)


def test_a_fired_command_run_completes_with_its_output(tmp_path: Path, store_url: str) -> None:
    defs = command_agent("echo", ECHO) + "---\n" + manual_trigger("hello", "echo")
    with running_daemon(tmp_path, defs, env={"ANTHROPIC_API_KEY": "not-for-commands"}, store=store_url) as daemon:
        run_id = daemon.fire("hello", {"name": "Ada"})
        run = daemon.wait_run(run_id)
    assert run["status"] == "completed"
    assert run["output"] == {
        "input": {"tag": "static", "name": "Ada"},
        "arg": "static",
        "run": run_id,
        "attempt": "1",
        "trigger": "hello",
        "secret_env": False,
    }
    assert run["source"] == "manual"
    assert [a["status"] for a in run["attempts"]] == ["completed"]
    assert instant(run["created_at"]) <= instant(run["started_at"]) <= instant(run["finished_at"])


def test_a_run_over_its_timeout_ends_timed_out_and_its_process_tree_is_gone(tmp_path: Path) -> None:
    script = (
        "import os, subprocess, sys, time; child = subprocess.Popen(['sleep', '60']); "
        "open('pids', 'w').write(f'{os.getpid()} {child.pid}'); time.sleep(60)"
    )
    defs = (
        command_agent("sleepy", script, f"  working_dir: {tmp_path}\n")
        + "---\n"
        + manual_trigger("slow", "sleepy", "timeout_seconds: 1\n")
    )
    with running_daemon(tmp_path, defs) as daemon:
        run_id = daemon.fire("slow")
        run = daemon.wait_run(run_id, timeout=20)
    assert run["status"] == "timed_out"
    assert run["attempts"][0]["error"] == "attempt timed out after 1s"
    assert run["dead_letter"] is True
    parent, child = map(int, (tmp_path / "pids").read_text().split())
    assert not pid_alive(parent)
    assert not pid_alive(child)


FLAKY = (
    "import os, sys; ok = os.path.exists('ok'); "
    "sys.stderr.write('attempt ' + os.environ['TRIGGERD_ATTEMPT'] + ' failed\\n'); "
    "sys.exit(0 if ok else 3)"
)


def test_retries_end_in_a_dead_letter_that_replay_revives(tmp_path: Path, store_url: str) -> None:
    defs = (
        command_agent("flaky", FLAKY, f"  working_dir: {tmp_path}\n")
        + "---\n"
        + manual_trigger("flaky", "flaky", "retry: {max_attempts: 3, backoff: 1s, max_backoff: 1s}\n")
    )
    with running_daemon(tmp_path, defs, store=store_url) as daemon:
        run_id = daemon.fire("flaky")
        run = daemon.wait_run(run_id, timeout=20)
        assert run["status"] == "failed"
        assert [a["error"] for a in run["attempts"]] == [f"exit status 3: attempt {n} failed" for n in (1, 2, 3)]
        gaps = [
            (instant(b["started_at"]) - instant(a["finished_at"])).total_seconds()
            for a, b in zip(run["attempts"], run["attempts"][1:], strict=False)
        ]
        assert all(0 <= gap < 1.5 for gap in gaps), gaps  # full jitter below max_backoff
        assert run["dead_letter"] is True
        assert [r["id"] for r in daemon.request("GET", "/v1/dead-letters")[1]["runs"]] == [run_id]

        (tmp_path / "ok").touch()
        status, answer = daemon.request("POST", f"/v1/runs/{run_id}/replay")
        assert status == 202
        assert answer["replay_of"] == run_id
        replay = daemon.wait_run(answer["run_id"])
        assert (replay["status"], replay["source"], replay["replay_of"]) == ("completed", "replay", run_id)
        assert replay["input"] == run["input"]
        assert daemon.request("GET", "/v1/dead-letters")[1]["runs"] == []


def test_overlap_skip_records_the_second_firing_as_skipped(tmp_path: Path) -> None:
    script = "import time; time.sleep(1.5)"
    defs = command_agent("slow", script) + "---\n" + manual_trigger("single", "slow", "overlap: skip\n")
    with running_daemon(tmp_path, defs) as daemon:
        first = daemon.fire("single")
        status, second = daemon.request("POST", "/v1/triggers/single/fire", {})
        assert (status, second["status"]) == (202, "skipped")
        skipped = daemon.run(second["run_id"])
        assert (skipped["status"], skipped["reason"], skipped["attempts"]) == ("skipped", "overlap", [])
        assert daemon.wait_run(first)["status"] == "completed"


def test_overlap_queue_runs_one_after_the_other_and_skips_beyond_max_queued(tmp_path: Path) -> None:
    defs = (
        command_agent("slow", "import time; time.sleep(0.5)")
        + "---\n"
        + manual_trigger("queued", "slow", "max_queued: 1\n")
    )
    with running_daemon(tmp_path, defs) as daemon:
        first, second = daemon.fire("queued"), daemon.fire("queued")
        status, third = daemon.request("POST", "/v1/triggers/queued/fire", {})
        assert (status, third["status"]) == (202, "skipped")
        assert daemon.run(third["run_id"])["reason"] == "queue_full"
        a, b = daemon.wait_run(first), daemon.wait_run(second)
    assert instant(b["started_at"]) >= instant(a["finished_at"])


def test_overlap_replace_cancels_the_running_run(tmp_path: Path, store_url: str) -> None:
    defs = (
        command_agent("slow", "import time; time.sleep(30)")
        + "---\n"
        + manual_trigger("latest", "slow", "overlap: replace\n")
    )
    with running_daemon(tmp_path, defs, store=store_url) as daemon:
        first = daemon.fire("latest")
        daemon.wait_run(first, {"running"})
        second = daemon.fire("latest")
        old = daemon.wait_run(first)
        assert (old["status"], old["reason"]) == ("cancelled", "replaced")
        daemon.wait_run(second, {"running"})
        daemon.request("POST", f"/v1/runs/{second}/cancel")


def test_a_per_agent_limit_holds_across_two_triggers(tmp_path: Path) -> None:
    defs = (
        command_agent("shared", "import time; time.sleep(0.7)", "  max_concurrent: 1\n")
        + "---\n"
        + manual_trigger("one", "shared", "max_concurrent: 5\n")
        + "---\n"
        + manual_trigger("two", "shared", "max_concurrent: 5\n")
    )
    with running_daemon(tmp_path, defs) as daemon:
        ids = [daemon.fire("one"), daemon.fire("two"), daemon.fire("one")]
        runs = sorted((daemon.wait_run(i) for i in ids), key=lambda r: r["started_at"])
    assert all(r["status"] == "completed" for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert instant(later["started_at"]) >= instant(earlier["finished_at"])


def test_the_global_limit_caps_running_runs(tmp_path: Path) -> None:
    defs = (
        command_agent("slow", "import time; time.sleep(0.6)")
        + "---\n"
        + manual_trigger("wide", "slow", "max_concurrent: 10\n")
    )
    with running_daemon(tmp_path, defs, settings="limits:\n  max_concurrent_runs: 2\n") as daemon:
        ids = [daemon.fire("wide") for _ in range(5)]
        runs = [daemon.wait_run(i) for i in ids]
    moments = sorted([(instant(r["started_at"]), 1) for r in runs] + [(instant(r["finished_at"]), -1) for r in runs])
    level, peak = 0, 0
    for _, step in moments:
        level += step
        peak = max(peak, level)
    assert peak == 2


def test_cancel_kills_a_running_command(tmp_path: Path, store_url: str) -> None:
    script = "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(60)"
    defs = (
        command_agent("sleeper", script, f"  working_dir: {tmp_path}\n") + "---\n" + manual_trigger("sleep", "sleeper")
    )
    with running_daemon(tmp_path, defs, store=store_url) as daemon:
        run_id = daemon.fire("sleep")
        pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(), what="pid"))
        status, run = daemon.request("POST", f"/v1/runs/{run_id}/cancel")
        assert status == 200
        assert (run["status"], run["reason"]) == ("cancelled", "requested")
        assert not pid_alive(pid)
        status, answer = daemon.request("POST", f"/v1/runs/{run_id}/cancel")
        assert status == 409
        assert answer["run_status"] == "cancelled"


def test_a_template_key_missing_from_the_input_fails_without_retry(tmp_path: Path) -> None:
    defs = "agent:\n  id: strict\n  type: command\n  command: [echo, '{{ missing.key }}']\n---\n" + manual_trigger(
        "strict", "strict", "retry: {max_attempts: 3, backoff: 1s}\n"
    )
    with running_daemon(tmp_path, defs) as daemon:
        run = daemon.wait_run(daemon.fire("strict"))
    assert run["status"] == "failed"
    assert run["error"] == "template key 'missing.key' is missing from the run input"
    assert len(run["attempts"]) == 1


def test_a_missing_program_is_a_clear_failure(tmp_path: Path) -> None:
    defs = "agent:\n  id: ghost\n  type: command\n  command: [/nonexistent/tool]\n---\n" + manual_trigger("g", "ghost")
    with running_daemon(tmp_path, defs) as daemon:
        run = daemon.wait_run(daemon.fire("g"))
    assert (run["status"], run["error"]) == ("failed", "cannot start '/nonexistent/tool': No such file or directory")


def test_running_commands_cost_the_daemon_no_thread_each(tmp_path: Path) -> None:
    """Issue 17: Python 3.11's default child watcher starts a thread per command to wait for it;
    the daemon learns that a command ended from its pidfd on the event loop instead."""
    defs = (
        "agent:\n  id: sleeper\n  type: command\n  command: [sleep, '30']\n  max_concurrent: 8\n---\n"
        + manual_trigger("many", "sleeper", "max_concurrent: 8\n")
    )
    with running_daemon(tmp_path, defs, settings="limits:\n  shutdown_grace_seconds: 0\n") as daemon:
        assert daemon.process is not None
        tasks = Path(f"/proc/{daemon.process.pid}/task")
        idle = len(list(tasks.iterdir()))
        run_ids = [daemon.fire("many") for _ in range(8)]
        wait_for(lambda: all(daemon.run(r)["status"] == "running" for r in run_ids), timeout=20, what="8 runs")
        busy = len(list(tasks.iterdir()))
    assert busy < idle + 4, (idle, busy)  # was idle + 8: one waiting thread per running command
