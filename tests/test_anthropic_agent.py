"""The anthropic agent through the real SDK against a fake Messages API on loopback (SPEC 5.1)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.fake_anthropic import FakeMessagesAPI, Reply
from tests.harness import running_daemon


def definitions(base_url: str, retry: str = "retry: {max_attempts: 2, backoff: 1s, max_backoff: 1s}") -> str:
    return f"""\
agent:
  id: claude
  type: anthropic
  model: claude-test-1
  system: "You are terse."
  prompt: "Summarise {{{{ title }}}} for {{{{ who.name }}}}"
  max_tokens: 321
  temperature: 0.2
  params: {{metadata: {{user_id: "u-1"}}}}
  api_key: "${{FAKE_KEY}}"
  base_url: "{base_url}"
---
trigger:
  id: summarise
  type: event
  event: {{pattern: never}}
  agent: {{id: claude, input: {{title: "the report"}}}}
  {retry}
"""


def test_the_run_records_text_and_usage_and_an_overloaded_answer_is_retried(tmp_path: Path) -> None:
    with (
        FakeMessagesAPI([Reply(status=529), Reply(text="Short summary.")]) as api,
        running_daemon(tmp_path, definitions(api.base_url), env={"FAKE_KEY": "test-key"}) as daemon,
    ):
        run = daemon.wait_run(daemon.fire("summarise", {"who": {"name": "Ada"}}))
        log = daemon.log.read_text()
    assert run["status"] == "completed"
    assert [(a["status"], a["error"]) for a in run["attempts"]] == [
        ("failed", "Anthropic API answered 529: overloaded_error: Overloaded"),
        ("completed", None),
    ]
    assert run["output"]["text"] == "Short summary."
    assert run["output"]["model"] == "claude-test-1"
    assert run["usage"]["input_tokens"] == 12
    assert run["usage"]["output_tokens"] == 5
    assert len(api.requests) == 2  # the SDK's own retries are off: only our policy retried
    body = api.bodies()[1]
    assert body["messages"] == [{"role": "user", "content": "Summarise the report for Ada"}]
    assert (body["model"], body["max_tokens"], body["system"], body["temperature"]) == (
        "claude-test-1",
        321,
        "You are terse.",
        0.2,
    )
    assert body["metadata"] == {"user_id": "u-1"}
    assert "test-key" not in log


def test_a_client_error_fails_without_retry(tmp_path: Path) -> None:
    with (
        FakeMessagesAPI([]) as api,
        running_daemon(
            tmp_path, definitions(api.base_url, "retry: {max_attempts: 3, backoff: 1s}"), env={"FAKE_KEY": "wrong"}
        ) as daemon,
    ):
        run = daemon.wait_run(daemon.fire("summarise", {"who": {"name": "Ada"}}))
    assert run["status"] == "failed"
    assert run["error"] == "Anthropic API answered 401: authentication_error: invalid x-api-key"
    assert len(run["attempts"]) == 1


def test_cancelling_a_slow_call_ends_it_at_once(tmp_path: Path) -> None:
    with (
        FakeMessagesAPI([Reply(delay=30)]) as api,
        running_daemon(tmp_path, definitions(api.base_url), env={"FAKE_KEY": "test-key"}) as daemon,
    ):
        run_id = daemon.fire("summarise", {"who": {"name": "Ada"}})
        daemon.wait_run(run_id, {"running"})
        time.sleep(0.3)
        started = time.monotonic()
        status, run = daemon.request("POST", f"/v1/runs/{run_id}/cancel")
        elapsed = time.monotonic() - started
    assert (status, run["status"]) == (200, "cancelled")
    assert elapsed < 5
