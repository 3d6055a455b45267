"""An anthropic agent that acts (SPEC 5.1 "Tools"): the tool-use loop, through the real SDK against
the fake Messages API on loopback, with command agents as tools run by the real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fake_anthropic import FakeMessagesAPI, Reply
from tests.harness import Daemon, pid_alive, run_cli, running_daemon, wait_for, write_config
from tests.test_orphans import stored_process
from tests.test_store import make_store, new_run
from triggerd.runs import RunStatus

LOOKUP = """\
import json, os, sys
service = json.load(sys.stdin)["service"]
print(json.dumps({"service": service, "state": "down", "token": os.environ["STATUS_TOKEN"]}))
"""
RESTART = """\
import json, pathlib, sys
service = json.load(sys.stdin)["service"]
pathlib.Path(sys.argv[1], "restarted-" + str(service)).write_text("yes")
sys.stdout.write("restarted " + str(service))
"""
FAILING = """\
import sys
sys.stderr.write("disk full\\n")
sys.exit(3)
"""
SLOW = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def definitions(tmp_path: Path, base_url: str, max_turns: int = 8) -> str:
    scripts = {"lookup": LOOKUP, "restart": RESTART, "failing": FAILING, "slow": SLOW}
    for name, text in scripts.items():
        (tmp_path / f"{name}.py").write_text(text)
    python = json.dumps(sys.executable)
    return f"""\
agent:
  id: triage
  type: anthropic
  model: claude-test-1
  prompt: "Triage: {{{{ alert }}}}"
  api_key: test-key
  base_url: "{base_url}"
  max_turns: {max_turns}
  tools:
    - agent: lookup
      description: "Look up one service's state"
      input_schema: {{type: object, properties: {{service: {{type: string}}}}, required: [service]}}
    - agent: restart
      input_schema: {{type: object, properties: {{service: {{type: string}}}}, required: [service]}}
    - agent: failing
      description: "Always fails"
      input_schema: {{type: object}}
    - agent: slow
      description: "Takes a minute"
      input_schema: {{type: object}}
---
agent:
  id: lookup
  type: command
  command: [{python}, "{tmp_path}/lookup.py"]
  env: {{STATUS_TOKEN: "${{STATUS_TOKEN}}"}}
---
agent:
  id: restart
  type: command
  description: "Restart one service"
  command: [{python}, "{tmp_path}/restart.py", "{tmp_path}"]
---
agent:
  id: failing
  type: command
  command: [{python}, "{tmp_path}/failing.py"]
---
agent:
  id: slow
  type: command
  command: [{python}, "{tmp_path}/slow.py", "{tmp_path}/slow.pids"]
---
trigger:
  id: alerts
  type: event
  event: {{pattern: never}}
  agent: {{id: triage}}
  timeout_seconds: 60
"""


ENV = {"STATUS_TOKEN": "s3cret-status-token"}
SERVICE = {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]}


def steps_without_times(run: dict[str, Any]) -> list[dict[str, Any]]:
    for step in run["steps"]:
        assert step["started_at"] <= step["finished_at"]
    return [{k: v for k, v in step.items() if k not in ("started_at", "finished_at")} for step in run["steps"]]


def alert_run(
    tmp_path: Path, replies: list[Reply], edit: Callable[[str], str] = str, max_turns: int = 8
) -> tuple[dict[str, Any], FakeMessagesAPI, Daemon]:
    """Fire `alerts` once, the model answering `replies`, the definitions changed by `edit`: the
    final run, the fake API (its requests kept) and the daemon (stopped; its log kept)."""
    with FakeMessagesAPI(replies) as api:
        text = edit(definitions(tmp_path, api.base_url, max_turns))
        with running_daemon(tmp_path, text, env=ENV) as daemon:
            run = daemon.wait_run(daemon.fire("alerts", {"alert": "x"}))
    return run, api, daemon


def test_a_two_tool_conversation_completes_with_the_final_text_and_two_steps(tmp_path: Path, store_url: str) -> None:
    replies = [
        Reply(text="Looking.", tool_uses=[("lookup", {"service": "web"})]),
        Reply(text="Restarting.", tool_uses=[("restart", {"service": "web"})]),
        Reply(text='{"summary": "web was down and is restarted"}'),
    ]
    with (
        FakeMessagesAPI(replies) as api,
        running_daemon(tmp_path, definitions(tmp_path, api.base_url), env=ENV, store=store_url) as daemon,
    ):
        run = daemon.wait_run(daemon.fire("alerts", {"alert": "web 502"}))
        schemas = daemon.request("GET", "/v1/openapi.json")[1]["components"]["schemas"]
    assert "steps" in schemas["Run"]["required"]
    for step in run["steps"]:  # the description says what a step holds
        assert set(schemas["Step"]["required"]) <= set(step) <= set(schemas["Step"]["properties"])
    assert (run["status"], run["error"]) == ("completed", None)
    assert run["output"] == {"summary": "web was down and is restarted"}  # the final text, parsed as JSON
    assert steps_without_times(run) == [
        {
            "attempt": 1,
            "turn": 1,
            "tool": "lookup",
            "input": {"service": "web"},
            "output": {"service": "web", "state": "down", "token": "***"},  # masked like run output
        },
        {"attempt": 1, "turn": 2, "tool": "restart", "input": {"service": "web"}, "output": "restarted web"},
    ]
    assert (tmp_path / "restarted-web").exists()
    bodies = api.bodies()
    assert len(bodies) == 3
    assert bodies[0]["tools"][:2] == [
        {"name": "lookup", "description": "Look up one service's state", "input_schema": SERVICE},
        {"name": "restart", "description": "Restart one service", "input_schema": SERVICE},  # the agent's own
    ]
    assert bodies[0]["messages"] == [{"role": "user", "content": "Triage: web 502"}]
    [looked_up] = api.tool_results(1)
    assert looked_up["tool_use_id"] == "toolu_01_0" and not looked_up.get("is_error")
    assert json.loads(looked_up["content"]) == {"service": "web", "state": "down", "token": "***"}
    assert api.tool_results(2) == [{"type": "tool_result", "tool_use_id": "toolu_02_0", "content": "restarted web"}]
    assert len(bodies[2]["messages"]) == 5  # the prompt, then each turn's tool_use and its tool_result
    assert "s3cret-status-token" not in json.dumps(bodies)


def test_usage_sums_every_turn(tmp_path: Path) -> None:
    replies = [
        Reply(
            tool_uses=[("lookup", {"service": "a"}), ("lookup", {"service": "b"})],
            usage={"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 7},
        ),
        Reply(tool_uses=[("lookup", {"service": "c"})], usage={"input_tokens": 200, "output_tokens": 20}),
        Reply(text="done", usage={"input_tokens": 300, "output_tokens": 30, "cache_read_input_tokens": 1}),
    ]
    with (
        FakeMessagesAPI(replies) as api,
        running_daemon(tmp_path, definitions(tmp_path, api.base_url), env=ENV) as daemon,
    ):
        run = daemon.wait_run(daemon.fire("alerts", {"alert": "x"}))
        shown = cli(tmp_path, "show", run["id"])
    assert (run["status"], run["output"]) == ("completed", "done")
    assert run["usage"]["input_tokens"] == 600
    assert run["usage"]["output_tokens"] == 60
    assert run["usage"]["cache_read_input_tokens"] == 8
    assert [(s["turn"], s["input"]["service"]) for s in run["steps"]] == [(1, "a"), (1, "b"), (2, "c")]
    assert [b["tool_use_id"] for b in api.tool_results(1)] == ["toolu_01_0", "toolu_01_1"]
    # `triggerd show`: the record, then the steps as a transcript
    assert shown.returncode == 0, shown.stderr
    record, transcript = shown.stdout.split("\nsteps (3):\n")
    assert json.loads(record)["usage"]["input_tokens"] == 600
    lines = transcript.splitlines()
    assert [line.split("  ")[1] for line in lines[::3]] == [
        "attempt 1, turn 1: lookup",
        "attempt 1, turn 1: lookup",
        "attempt 1, turn 2: lookup",
    ]
    assert lines[1:3] == [
        '    input:  {"service": "a"}',
        '    output: {"service": "a", "state": "down", "token": "***"}',
    ]


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(root, *args, "--config", "triggerd.yaml", env=ENV, timeout=60)


def test_triggerd_test_shows_the_tool_definitions_the_model_would_receive(tmp_path: Path) -> None:
    text = definitions(tmp_path, "http://127.0.0.1:9", max_turns=3)
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "all.yaml").write_text(text.replace("{{ alert }}", "{{ trigger_context.event.data.alert }}"))
    (tmp_path / "triggerd.yaml").write_text("definitions: [defs]\n")
    (tmp_path / "event.json").write_text('{"type": "never", "data": {"alert": "disk"}}')
    proc = cli(tmp_path, "test", "alerts", "--event", "event.json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = lines.index("tools           (4, at most 3 model calls per attempt)")
    offered = [json.loads(line) for line in lines[start + 1 : start + 5]]  # one tool a line
    assert [tool["name"] for tool in offered] == ["lookup", "restart", "failing", "slow"]
    assert offered[0] == {"name": "lookup", "description": "Look up one service's state", "input_schema": SERVICE}


def test_a_tool_input_that_fails_its_schema_goes_back_as_an_error_and_runs_nothing(tmp_path: Path) -> None:
    replies = [Reply(tool_uses=[("restart", {"service": 42})]), Reply(text="I could not restart it.")]
    run, api, _ = alert_run(tmp_path, replies)
    assert (run["status"], run["output"]) == ("completed", "I could not restart it.")
    assert not (tmp_path / "restarted-42").exists()  # the command never started
    [result] = api.tool_results(1)
    assert result["is_error"] is True
    assert result["content"] == (
        "input does not match the input_schema of tool 'restart': 42 is not of type 'string' (at /service)"
    )
    [step] = steps_without_times(run)
    assert step == {"attempt": 1, "turn": 1, "tool": "restart", "input": {"service": 42}, "error": result["content"]}


def test_a_failing_command_tool_is_an_error_result_and_the_model_decides(tmp_path: Path) -> None:
    replies = [
        Reply(tool_uses=[("failing", {})]),
        Reply(tool_uses=[("restart", {"service": "db"})]),  # the model's next turn: another way
        Reply(text="Restarted db instead."),
    ]
    run, api, daemon = alert_run(tmp_path, replies)
    logged = [line["message"] for line in daemon.log_lines() if line["message"].startswith("tool call")]
    assert logged == [
        "tool call failing (turn 1) failed: tool 'failing' failed: exit status 3: disk full",
        "tool call restart (turn 2) completed",
    ]
    assert (run["status"], run["output"]) == ("completed", "Restarted db instead.")
    [result] = api.tool_results(1)
    assert (result["is_error"], result["content"]) == (True, "tool 'failing' failed: exit status 3: disk full")
    assert [(s["tool"], s.get("error")) for s in run["steps"]] == [
        ("failing", "tool 'failing' failed: exit status 3: disk full"),
        ("restart", None),
    ]
    assert (tmp_path / "restarted-db").exists()


def test_max_turns_ends_the_run_failed_with_reason_max_turns(tmp_path: Path) -> None:
    replies = [Reply(tool_uses=[("lookup", {"service": "a"})]) for _ in range(5)]
    run, api, _ = alert_run(tmp_path, replies, max_turns=2)
    assert (run["status"], run["reason"]) == ("failed", "max_turns")
    assert run["error"] == "max_turns (2) reached and the model still asked for a tool"
    assert len(api.requests) == 2
    assert [s["turn"] for s in run["steps"]] == [1]  # the second turn's tool call never ran: no turn was left
    assert run["usage"]["input_tokens"] == 24  # both turns, though the run failed


def test_cancel_during_a_tool_call_kills_the_tools_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "slow.pids"
    with (
        FakeMessagesAPI([Reply(tool_uses=[("slow", {})])]) as api,
        running_daemon(tmp_path, definitions(tmp_path, api.base_url), env=ENV) as daemon,
    ):
        run_id = daemon.fire("alerts", {"alert": "x"})
        wait_for(pids.exists, timeout=15, what="the slow tool to start")
        leader, child = map(int, pids.read_text().split())
        assert os.getpgid(child) == leader  # the child is in the tool's own process group
        [running] = daemon.run(run_id)["steps"]  # the call in progress is on record already
        assert (running["tool"], running["attempt"], "finished_at" in running) == ("slow", 1, False)
        started = time.monotonic()
        status, run = daemon.request("POST", f"/v1/runs/{run_id}/cancel")
        elapsed = time.monotonic() - started
        assert (status, run["status"]) == (200, "cancelled")
        wait_for(lambda: not pid_alive(leader) and not pid_alive(child), timeout=10, what="the tool's processes to end")
        run = daemon.run(run_id)
    assert elapsed < 8
    [step] = run["steps"]
    assert (step["tool"], step["error"]) == ("slow", "cancelled: the run's attempt ended during this call")
    assert len(api.requests) == 1
    assert run["usage"]["input_tokens"] == 12  # what the one model call spent, though the run was cancelled


def retry_twice(text: str) -> str:
    """The definitions with the trigger retrying a failed attempt once, after a second."""
    return text.replace(
        "  timeout_seconds: 60\n", "  timeout_seconds: 60\n  retry: {max_attempts: 2, backoff: 1s, max_backoff: 1s}\n"
    )


def test_a_retry_starts_the_conversation_afresh_and_keeps_the_first_attempts_steps(tmp_path: Path) -> None:
    replies = [
        Reply(tool_uses=[("lookup", {"service": "a"})]),
        Reply(status=529),  # the API fails mid-conversation: the attempt fails and is retried
        Reply(tool_uses=[("lookup", {"service": "b"})]),
        Reply(text="fine"),
    ]
    run, api, _ = alert_run(tmp_path, replies, retry_twice)
    assert (run["status"], run["output"]) == ("completed", "fine")
    assert [a["status"] for a in run["attempts"]] == ["failed", "completed"]
    assert api.bodies()[2]["messages"] == [{"role": "user", "content": "Triage: x"}]  # afresh from the prompt
    assert [(s["attempt"], s["turn"], s["input"]["service"]) for s in run["steps"]] == [(1, 1, "a"), (2, 1, "b")]
    assert run["usage"]["input_tokens"] == 24  # the last attempt's two calls


def test_an_http_tool_posts_the_tool_input_and_a_slow_tool_times_out_as_an_error(tmp_path: Path) -> None:
    replies = [
        Reply(tool_uses=[("echo", {"note": "hi"}), ("slow", {})]),
        Reply(text="done"),
    ]
    with FakeMessagesAPI(replies) as api:
        text = (
            definitions(tmp_path, api.base_url)
            .replace(
                "    - agent: slow\n", "    - agent: echo\n      input_schema: {type: object}\n    - agent: slow\n"
            )
            .replace('slow.pids"]\n', 'slow.pids"]\n  timeout_seconds: 1\n')
        )
        text += f"""---
agent:
  id: echo
  type: http
  url: "{api.base_url}/echo"
  headers: {{Authorization: "Bearer ${{STATUS_TOKEN}}"}}
"""
        with running_daemon(tmp_path, text, env=ENV) as daemon:
            run_id = daemon.fire("alerts", {"alert": "x"})
            run = daemon.wait_run(run_id)
    assert (run["status"], run["output"]) == ("completed", "done")
    [echoed] = api.echoed
    assert echoed["body"] == {
        "run_id": run_id,
        "trigger_id": "alerts",
        "agent_id": "echo",
        "attempt": 1,
        "input": {"note": "hi"},
    }
    assert echoed["headers"]["Authorization"] == "Bearer s3cret-status-token"
    echo_result, slow_result = api.tool_results(1)
    assert json.loads(echo_result["content"]) == {"echo": {"note": "hi"}}
    assert (slow_result["is_error"], slow_result["content"]) == (True, "tool 'slow' timed out after 1s")
    leader, child = map(int, (tmp_path / "slow.pids").read_text().split())
    assert not pid_alive(leader) and not pid_alive(child)  # its process group was ended
    assert [(s["tool"], s.get("error")) for s in run["steps"]] == [
        ("echo", None),
        ("slow", "tool 'slow' timed out after 1s"),
    ]


def test_a_tool_left_running_by_a_killed_daemon_is_ended_before_the_retry(tmp_path: Path) -> None:
    pids = tmp_path / "slow.pids"
    with FakeMessagesAPI([Reply(tool_uses=[("slow", {})]), Reply(text="recovered")]) as api:
        text = definitions(tmp_path, api.base_url).replace(
            "  timeout_seconds: 60\n", "  timeout_seconds: 60\n  retry: {max_attempts: 2, backoff: 1s}\n"
        )
        port = write_config(tmp_path, text)
        daemons = [Daemon(tmp_path, port, {"PATH": os.environ["PATH"], **ENV}).start()]
        try:
            run_id = daemons[0].fire("alerts", {"alert": "x"})
            wait_for(pids.exists, timeout=15, what="the slow tool to start")
            leader, child = map(int, pids.read_text().split())
            # The tool's process group is recorded on the calling run's attempt, as a command run's is.
            wait_for(lambda: stored_process(tmp_path, run_id, 1)[0] == leader, timeout=5, what="the record")
            assert daemons[0].stop(signal.SIGKILL) == -signal.SIGKILL
            assert pid_alive(leader) and pid_alive(child), "the tool died with the daemon: nothing to show"
            daemons.append(Daemon(tmp_path, port, {"PATH": os.environ["PATH"], **ENV}).start())
            run = daemons[1].wait_run(run_id)
            assert not pid_alive(leader) and not pid_alive(child)
        finally:
            for daemon in daemons:
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.stop()
            for pid in map(int, pids.read_text().split()) if pids.exists() else ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert (run["status"], run["output"]) == ("completed", "recovered")
    assert [(a["status"], a["error"]) for a in run["attempts"]] == [("failed", "interrupted"), ("completed", None)]
    # The call the crash cut short stays on record (stored as it started), unfinished.
    assert [(s["attempt"], s["tool"], "finished_at" in s) for s in run["steps"]] == [(1, "slow", False)]


def test_both_stores_keep_steps_per_attempt_while_it_runs_and_when_it_ends(store_url: str) -> None:
    first = [{"turn": 1, "tool": "lookup", "input": {"service": "a"}, "started_at": "2026-01-01T00:00:01.000Z"}]
    ended = [{**first[0], "output": "up", "finished_at": "2026-01-01T00:00:02.000Z"}]

    async def scenario() -> list[list[dict[str, Any]]]:
        store = make_store(store_url)
        await store.open()
        run = new_run()
        await store.create_run(run)
        seen = []
        await store.start_attempt(run.id, 1, "2026-01-01T00:00:01.000Z")
        await store.record_steps(run.id, 1, first)
        seen.append((await store.get_run(run.id)).steps)
        await store.end_attempt(
            run.id,
            1,
            status=RunStatus.FAILED,
            error="x",
            at="2026-01-01T00:00:03.000Z",
            then=RunStatus.PENDING,
            steps=ended,
        )
        await store.record_steps(run.id, 1, first)  # too late: the attempt is closed
        await store.start_attempt(run.id, 2, "2026-01-01T00:00:04.000Z")
        seen.append((await store.get_run(run.id)).steps)
        await store.close()
        return seen

    running, after = asyncio.run(scenario())
    assert running == [{"attempt": 1, **first[0]}]
    assert after == [{"attempt": 1, **ended[0]}]


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_a_tool_input_nested_too_deeply_fails_the_run_with_a_precise_error(tmp_path: Path) -> None:
    # A prompt-injected model can nest its tool input without end; the SDK cannot even send such a
    # turn back (it stops serialising at a fixed depth), so the attempt ends, saying why, for good.
    replies = [Reply(tool_uses=[("lookup", {"service": "web", "extra": nested(300)})]), Reply(text="done")]
    run, api, _ = alert_run(tmp_path, replies, retry_twice)
    assert (run["status"], run["steps"]) == ("failed", [])  # the tool never ran
    assert run["error"] == "the model's input for tool 'lookup' is nested deeper than 64 levels"
    assert len(run["attempts"]) == 1  # the same model and prompt would do it again: no retry
    assert len(api.requests) == 1


DEEP = """\
import json
value = "x"
for _ in range(600):
    value = [value]
print(json.dumps({"token": "s3cret-status-token", "value": value}))
"""


def test_a_tool_output_nested_too_deeply_goes_back_as_text(tmp_path: Path) -> None:
    # Before this was bounded, such an output (an http tool relaying a third party's JSON, say)
    # broke the recording of the attempt and left the run 'running'; now it is kept as its text.
    (tmp_path / "deep.py").write_text(DEEP)
    replies = [Reply(tool_uses=[("failing", {})]), Reply(text="gave up")]
    run, api, _ = alert_run(tmp_path, replies, lambda text: text.replace("failing.py", "deep.py"))
    assert (run["status"], run["output"]) == ("completed", "gave up")
    [result] = api.tool_results(1)
    assert result.get("is_error") is not True
    assert result["content"].startswith('{"token": "***", "value": [[[')
    [step] = run["steps"]
    assert (step["tool"], "error" in step, step["output"]) == ("failing", False, result["content"])


def test_a_model_input_that_would_become_an_option_runs_nothing(tmp_path: Path) -> None:
    # SPEC 5.1's option_args rule holds for a tool call: the model's input is a stranger's.
    replies = [Reply(tool_uses=[("restart", {"service": "--force"})]), Reply(text="refused")]
    run, api, _ = alert_run(
        tmp_path, replies, lambda text: text.replace('restart.py", "', 'restart.py", "{{ service }}", "')
    )
    assert (run["status"], run["output"]) == ("completed", "refused")
    assert not list(tmp_path.glob("restarted-*"))  # the command never started
    [result] = api.tool_results(1)
    assert result["is_error"] is True
    assert result["content"].startswith(
        "tool 'restart' failed: argument 2 of the command ({{ service }}) starts with '-'"
    )


def test_a_tool_name_the_agent_does_not_have_is_an_error_result(tmp_path: Path) -> None:
    # `params.tools` may offer the model a tool no agent stands behind; calling it must not end the run.
    notes = {"name": "notes", "description": "Take a note", "input_schema": {"type": "object"}}
    replies = [Reply(tool_uses=[("notes", {"text": "hi"}), ("lookup", {"service": "a"})]), Reply(text="ok")]
    run, api, _ = alert_run(
        tmp_path,
        replies,
        lambda text: text.replace("  max_turns: 8\n", f"  max_turns: 8\n  params: {{tools: [{json.dumps(notes)}]}}\n"),
    )
    assert (run["status"], run["output"]) == ("completed", "ok")
    assert api.bodies()[0]["tools"][-1] == notes
    unknown, looked_up = api.tool_results(1)
    assert (unknown["is_error"], unknown["content"]) == (
        True,
        "unknown tool 'notes'; the tools are: lookup, restart, failing, slow",
    )
    assert not looked_up.get("is_error")  # the next block of the same turn still ran
    assert [(s["tool"], "error" in s) for s in run["steps"]] == [("notes", True), ("lookup", False)]


def test_a_nul_byte_in_a_rendered_argument_is_a_precise_error_result(tmp_path: Path) -> None:
    replies = [Reply(tool_uses=[("restart", {"service": "a\u0000b"})]), Reply(text="refused")]
    run, api, daemon = alert_run(
        tmp_path, replies, lambda text: text.replace('restart.py", "', 'restart.py", "--", "{{ service }}", "')
    )
    raised = [line for line in daemon.log_lines() if line["message"] == "tool backend raised"]
    assert (run["status"], run["output"]) == ("completed", "refused")
    [result] = api.tool_results(1)
    assert result["content"] == "tool 'restart' failed: argument 3 of the command contains a NUL character"
    assert raised == []  # an input the command cannot take, not a bug of the daemon


def test_show_prints_no_terminal_control_characters_a_tool_or_model_wrote(tmp_path: Path) -> None:
    # A tool's text output (and the model's input, which it echoes) is a stranger's text: printed
    # raw, an escape sequence would drive the operator's terminal (retitle it, hide lines).
    evil = "web\x1b]0;pwned\x07\x1b[2K"
    replies = [Reply(tool_uses=[("restart", {"service": evil})]), Reply(text="done")]
    with (
        FakeMessagesAPI(replies) as api,
        running_daemon(tmp_path, definitions(tmp_path, api.base_url), env=ENV) as daemon,
    ):
        run = daemon.wait_run(daemon.fire("alerts", {"alert": "x"}))
        shown = cli(tmp_path, "show", run["id"])
    assert run["steps"][0]["output"] == "restarted " + evil
    assert shown.returncode == 0, shown.stderr
    transcript = shown.stdout.split("\nsteps (1):\n")[1]
    assert "\x1b" not in transcript and "\x07" not in transcript
    assert "    output: restarted web\\x1b]0;pwned\\x07\\x1b[2K" in transcript.splitlines()
