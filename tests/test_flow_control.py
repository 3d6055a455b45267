"""Flow control (SPEC 12) against two real daemons sharing one store, over HTTP: concurrency keys,
debounce, budgets, pause and resume. Run on both stores (two daemons share a SQLite file as they
share a PostgreSQL database); the throttle and paused schedule slots, which need time moved, are
in tests/test_flow_clock.py."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.fake_anthropic import FakeMessagesAPI, Reply
from tests.harness import Daemon, http, instances, run_cli, wait_for
from tests.test_scale_out import PY, instant

QUICK = "agent: {id: quick, type: command, command: ['true']}\n---\n"


def hook(trigger_id: str, agent: str, flow: str) -> str:
    """A webhook trigger running `agent` (its YAML mapping), with the flow-control lines `flow`."""
    return f"trigger:\n  id: {trigger_id}\n  type: webhook\n  webhook: {{}}\n  agent: {agent}\n{flow}"


def post(daemon: Daemon, trigger_id: str, body: Any, status: str = "pending") -> dict[str, Any]:
    """POST `body` to the trigger's webhook: accepted (202), its run in `status`."""
    code, answer = daemon.request("POST", f"/webhooks/{trigger_id}", body)
    assert code == 202 and answer["status"] == status, answer
    return dict(answer)


def runs_of(daemon: Daemon, trigger_id: str) -> list[dict[str, Any]]:
    status, answer = daemon.request("GET", f"/v1/runs?trigger={trigger_id}&limit=100")
    assert status == 200, answer
    return list(answer["runs"])


def settled(daemon: Daemon, trigger_id: str, count: int) -> list[dict[str, Any]]:
    """The trigger's `count` runs once every one is final, oldest first."""

    def done() -> list[dict[str, Any]] | None:
        runs = runs_of(daemon, trigger_id)
        finals = [r for r in runs if r["status"] in {"completed", "failed", "skipped", "cancelled", "timed_out"}]
        return sorted(runs, key=lambda r: r["id"]) if len(finals) == count == len(runs) else None

    return list(wait_for(done, timeout=30, what=f"{count} final runs of {trigger_id}"))


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(
        instant(a["started_at"]) < instant(b["finished_at"]) and instant(b["started_at"]) < instant(a["finished_at"])
    )


def skips(daemon: Daemon, trigger_id: str, reason: str) -> float:
    _, text = http("GET", daemon.url + "/metrics")
    for line in str(text).splitlines():
        if line.startswith(f'triggerd_skips_total{{reason="{reason}",trigger="{trigger_id}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


SLEEPER = f"agent: {{id: slow, type: command, command: [{json.dumps(PY)}, -c, 'import time; time.sleep(1.5)']}}\n---\n"


def test_two_prs_run_at_once_while_two_pushes_to_one_pr_run_one_after_the_other(tmp_path: Path, store_url: str) -> None:
    definitions = SLEEPER + hook(
        "pr", "{id: slow, input_mapping: {pr: $.body.pr}}", "  concurrency_key: $.body.pr\n  max_concurrent: 1\n"
    )
    with instances(tmp_path, definitions, store_url) as (a, b):
        for daemon, pr in ((a, 1), (b, 2), (b, 1)):
            post(daemon, "pr", {"pr": pr})
        first, other, second = settled(a, "pr", 3)
        assert [r["input"]["pr"] for r in (first, other, second)] == [1, 2, 1]
        assert all(r["status"] == "completed" for r in (first, other, second))
        assert overlap(first, other), "two PRs should run at once"
        assert not overlap(first, second), "two pushes to one PR must run one after the other"


BURST = QUICK + hook(
    "burst", "{id: quick, input_mapping: {n: $.body.n}}", "  debounce: {period: 2s, key: $.body.repo}\n"
)


def test_a_burst_of_ten_gives_one_run_with_the_last_input_after_the_period(tmp_path: Path, store_url: str) -> None:
    with instances(tmp_path, BURST, store_url) as (a, b):
        ids = []
        for n in range(10):
            ids.append(post((a, b)[n % 2], "burst", {"n": n, "repo": "r"})["run_id"])
        last = a.run(ids[-1])
        assert (last["status"], last["reason"]) == ("pending", "debounced")  # stored, waiting out the period
        runs = settled(a, "burst", 10)
        done = [r for r in runs if r["status"] == "completed"]
        assert len(done) == 1 and done[0]["id"] == ids[-1] and done[0]["input"] == {"n": 9}
        assert (instant(done[0]["started_at"]) - instant(done[0]["created_at"])).total_seconds() >= 2.0
        superseded = [r for r in runs if r["id"] != ids[-1]]
        assert all((r["status"], r["reason"]) == ("skipped", "debounced") for r in superseded), superseded
        assert skips(a, "burst", "debounced") + skips(b, "burst", "debounced") == 9


def test_a_budget_reached_by_recorded_usage_skips_the_next_firing_and_emits_budget_exceeded(
    tmp_path: Path, store_url: str
) -> None:
    replies = [
        Reply(usage={"input_tokens": 700, "output_tokens": 400}),
        Reply(usage={"input_tokens": 300, "output_tokens": 200}),
    ]
    with FakeMessagesAPI(replies) as api:
        definitions = (
            f"agent:\n  id: claude\n  type: anthropic\n  model: claude-test-1\n  api_key: test-key\n"
            f"  base_url: {api.base_url}\n  budget: {{tokens_per_day: 1500}}\n---\n"
            + QUICK
            + "trigger:\n  id: spend\n  type: webhook\n  webhook: {}\n  agent: {id: claude, input: {q: hi}}\n"
            "  budget: {tokens_per_day: 1000}\n---\n"
            "trigger: {id: other, type: webhook, webhook: {}, agent: {id: claude, input: {q: hi}}}\n---\n"
            "trigger: {id: watch, type: event, event: {pattern: error.agent.budget_exceeded}, agent: {id: quick}}\n"
        )
        with instances(tmp_path, definitions, store_url) as (a, b):
            status, answer = a.request("POST", "/webhooks/spend", {})
            assert status == 202, answer
            first = a.wait_run(answer["run_id"])
            assert first["status"] == "completed" and first["usage"]["input_tokens"] == 700
            status, answer = b.request("POST", "/webhooks/spend", {})
            assert status == 202 and answer["status"] == "skipped", answer
            second = b.run(answer["run_id"])
            assert (second["status"], second["reason"]) == ("skipped", "budget")
            assert "tokens_per_day 1100 of 1000" in second["error"]
            assert len(api.requests) == 1  # the skipped firing never reached the model
            watched = wait_for(lambda: runs_of(b, "watch"), timeout=10, what="the budget event's run")
            event = watched[0]["input"]["trigger_context"]["event"]
            assert event["data"]["run_id"] == second["id"] and event["severity"] == "high"
            status, described = a.request("GET", "/v1/triggers/spend")
            assert status == 200 and described["spend"]["trigger"] == {"tokens_per_day": 1100, "runs_per_hour": 1}
            assert described["flow"]["budget"] == {"tokens_per_day": 1000, "runs_per_hour": None}
            assert described["spend"]["agent"] == {"tokens_per_day": 1100, "runs_per_hour": 1}
            # The agent's budget (1500) still allows a run of a trigger without one of its own, then not.
            status, answer = a.request("POST", "/webhooks/other", {})
            assert b.wait_run(answer["run_id"])["status"] == "completed"
            status, answer = b.request("POST", "/webhooks/other", {})
            assert status == 202 and answer["status"] == "skipped", answer
            third = b.run(answer["run_id"])
            assert (
                third["reason"] == "budget" and "agent 'claude'" in third["error"] and "1600 of 1500" in third["error"]
            )
            assert skips(b, "spend", "budget") == 1 and skips(b, "other", "budget") == 1


def test_a_paused_webhook_answers_503_on_every_daemon_until_resumed_and_the_pause_survives_a_restart(
    tmp_path: Path, store_url: str
) -> None:
    definitions = QUICK + "trigger: {id: hook, type: webhook, webhook: {}, agent: {id: quick}}\n"
    with instances(tmp_path, definitions, store_url) as (a, b):
        status, answer = a.request("POST", "/v1/triggers/hook/pause")
        assert status == 200 and answer["paused"] is True and answer["paused_at"], answer
        assert a.request("GET", "/v1/triggers/hook")[1]["paused"] is True

        def refused(daemon: Daemon) -> bool:
            request = urllib_post(daemon.url + "/webhooks/hook")
            return request[0] == 503 and int(request[1]) > 0

        assert refused(a)
        wait_for(lambda: refused(b), timeout=5, what="the other daemon to learn of the pause")
        a.stop()
        a.start()
        assert refused(a), "the pause must survive a restart"
        assert a.request("POST", "/v1/reload")[0] == 200
        assert refused(a), "and a reload"
        assert a.request("POST", "/v1/triggers/nope/pause")[0] == 404
        status, answer = b.request("POST", "/v1/triggers/hook/resume")
        assert status == 200 and answer["paused"] is False, answer
        wait_for(lambda: a.request("POST", "/webhooks/hook", {})[0] == 202, timeout=5, what="a to learn of the resume")
        assert b.request("POST", "/webhooks/hook", {})[0] == 202


def urllib_post(url: str, data: bytes = b"{}") -> tuple[int, str]:
    """POST a JSON body: the status and the Retry-After header ("0" when absent)."""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Retry-After", "0")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After", "0")


def test_the_cli_pauses_and_resumes_a_trigger_and_the_listing_shows_it(tmp_path: Path, store_url: str) -> None:
    definitions = (
        QUICK + "trigger: {id: hook, type: webhook, webhook: {}, agent: {id: quick}}\n---\n"
        "trigger: {id: ev, type: event, event: {pattern: 'x.*'}, agent: {id: quick}}\n"
    )
    with instances(tmp_path, definitions, store_url, "a") as (a,):

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli(tmp_path, *args, "--url", a.url)

        paused = cli("pause", "hook")
        assert paused.returncode == 0 and paused.stdout.startswith("hook paused since "), paused
        assert cli("pause", "ev").returncode == 0
        listed = a.request("GET", "/v1/triggers")[1]["triggers"]
        assert [(t["id"], t["paused"]) for t in listed] == [("ev", True), ("hook", True)]
        assert urllib_post(a.url + "/webhooks/hook") == (503, "60")
        event = {"type": "x.y", "source": "test"}
        assert a.request("POST", "/v1/events", event)[1]["matched"] == []  # a paused trigger matches nothing
        assert cli("resume", "ev").returncode == 0
        assert a.request("POST", "/v1/events", event)[1]["matched"] == ["ev"]
        resumed = cli("resume", "hook")
        assert (resumed.returncode, resumed.stdout) == (0, "hook resumed\n")
        missing = cli("pause", "nope")
        assert (missing.returncode, missing.stderr) == (1, "triggerd pause: 404: no trigger 'nope'\n")
        assert a.request("POST", "/webhooks/hook", {})[0] == 202


def trial(daemon: Daemon, trigger_id: str, sample: Path) -> str:
    """`triggerd test` of the trigger with the sample payload, beside the daemon's settings: its output."""
    done = run_cli(daemon.root, "test", trigger_id, "--payload", str(sample), "--config", "triggerd.yaml")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_triggerd_test_shows_the_sample_firings_groups_and_what_the_running_daemon_would_do_now(
    tmp_path: Path, store_url: str
) -> None:
    definitions = (
        QUICK
        + hook(
            "pr",
            "{id: quick}",
            "  concurrency_key: $.body.pr\n  throttle: {limit: 1, per: 1h, key: $.body.repo}\n"
            "  budget: {runs_per_hour: 1}\n---\n",
        )
        + hook("burst", "{id: quick}", "  debounce: {period: 1h}\n")
    )
    sample = tmp_path / "sample.json"
    sample.write_text('{"pr": 7, "repo": "acme/api"}')
    with instances(tmp_path, definitions, store_url, "a") as (a,):
        shown = trial(a, "pr", sample)
        assert "concurrency key 7   ($.body.pr; max_concurrent 1, overlap queue per value)" in shown, shown
        assert 'throttle key    "acme/api"' in shown
        assert "throttled     no: 0 of 1 started in the window" in shown
        assert "concurrency   0 running, 0 pending in its group: it may start" in shown
        a.wait_run(a.request("POST", "/webhooks/pr", {"pr": 7, "repo": "acme/api"})[1]["run_id"])
        shown = trial(a, "pr", sample)
        assert "throttled     yes: 1 of 1 started in the window; waits until " in shown, shown
        assert "trigger spend 0 tokens in the last day, 1 runs in the last hour: over budget" in shown
        assert a.request("POST", "/webhooks/burst", {})[0] == 202
        shown = trial(a, "burst", sample)
        assert "debounce key    (all)   (the whole trigger; period 3600s)" in shown, shown
        assert "debounced     yes: supersedes the burst's pending run" in shown
        a.request("POST", "/v1/triggers/burst/pause")
        assert "paused        since " in trial(a, "burst", sample)
        a.stop()
        assert "(its counts are not shown)" in trial(a, "burst", sample)


def test_validate_reports_each_bad_flow_control_value_at_its_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'agent: {id: a, type: command, command: ["true"], budget: {runs_per_hour: 0}}\n---\n'
        "trigger:\n  id: t\n  type: webhook\n  webhook: {}\n  agent: {id: a}\n"
        '  concurrency_key: "body.pr"\n  debounce: {period: 0}\n  throttle: {limit: 0, per: "soon"}\n  budget: {}\n'
    )
    done = run_cli(tmp_path, "validate", str(bad), "--format", "json")
    assert done.returncode == 1, done.stderr
    found = {(p["line"], p["column"], p["pointer"]) for p in json.loads(done.stdout)["problems"]}
    assert {
        (1, 74, "/agent/budget/runs_per_hour"),
        (8, 20, "/trigger/concurrency_key"),
        (9, 22, "/trigger/debounce/period"),
        (10, 21, "/trigger/throttle/limit"),
        (10, 29, "/trigger/throttle/per"),
        (11, 11, "/trigger/budget"),
    } <= found, found


def test_a_huge_key_value_from_a_senders_body_is_grouped_by_its_digest_not_stored_whole(
    tmp_path: Path, store_url: str
) -> None:
    # A key selecting a large object of an unauthenticated sender's body: stored whole, it would
    # bloat every run row and index, exceed PostgreSQL's index row size (the firing refused), and
    # make `triggerd test`'s query to the daemon too long. Groups must still be told apart.
    definitions = (
        f"agent: {{id: slow, type: command, command: [{json.dumps(PY)}, -c, 'import time; time.sleep(30)']}}\n---\n"
        + hook("pr", "{id: slow}", "  concurrency_key: $.body.pr\n  max_concurrent: 1\n  overlap: skip\n")
    )
    huge, other = ({"blob": secrets.token_hex(150_000)} for _ in range(2))
    with instances(tmp_path, definitions, store_url, "a") as (a,):
        first = a.wait_run(post(a, "pr", {"pr": huge})["run_id"], {"running"})
        post(a, "pr", {"pr": huge}, "skipped")  # the same group: overlap
        post(a, "pr", {"pr": other})  # another group
        sample = tmp_path / "sample.json"
        sample.write_text(json.dumps({"pr": huge}))
        shown = trial(a, "pr", sample)
        key = next(line for line in shown.splitlines() if line.startswith("concurrency key"))
        assert key.startswith("concurrency key sha256:") and len(key) < 200, key[:200]
        assert "concurrency   1 running, 0 pending in its group: it would wait" in shown, shown
        assert a.run(first["id"])["status"] == "running"


def test_a_debounced_trigger_still_records_firings_of_new_groups_past_max_queued_as_queue_full(
    tmp_path: Path, store_url: str
) -> None:
    # A debounce key from a sender's body makes a group per value: without max_queued, a sender
    # varying it would queue a pending run per value, without bound.
    definitions = QUICK + hook(
        "burst", "{id: quick}", "  max_concurrent: 1\n  max_queued: 2\n  debounce: {period: 1h, key: $.body.k}\n"
    )
    with instances(tmp_path, definitions, store_url, "a") as (a,):
        answers = [a.request("POST", "/webhooks/burst", {"k": k}) for k in (1, 2, 3, 4, 1)]
        assert all(status == 202 for status, _ in answers), answers
        assert [answer["status"] for _, answer in answers] == ["pending", "pending", "pending", "skipped", "pending"]
        assert a.run(answers[3][1]["run_id"])["reason"] == "queue_full"
        assert a.run(answers[0][1]["run_id"])["reason"] == "debounced"  # superseded by the last, in its group
        assert skips(a, "burst", "queue_full") == 1


def test_a_burst_interrupted_by_sigkill_still_gives_one_run_with_the_last_input_after_the_period(
    tmp_path: Path, store_url: str
) -> None:
    definitions = QUICK + hook("burst", "{id: quick, input_mapping: {n: $.body.n}}", "  debounce: {period: 3s}\n")
    with instances(tmp_path, definitions, store_url, "a") as (a,):
        first = post(a, "burst", {"n": 0})
        a.stop(signal.SIGKILL)  # between two firings of the burst, before its period ends
        a.start()
        last = post(a, "burst", {"n": 1})
        early, late = settled(a, "burst", 2)
        assert (early["id"], early["status"], early["reason"]) == (first["run_id"], "skipped", "debounced")
        assert (late["id"], late["status"], late["input"]) == (last["run_id"], "completed", {"n": 1})
        assert (instant(late["started_at"]) - instant(late["created_at"])).total_seconds() >= 3.0


def test_a_key_value_nested_too_deep_to_encode_is_grouped_as_missing_not_an_internal_error(
    tmp_path: Path, store_url: str
) -> None:
    # A body nested nearly as deep as the parsers take (orjson: 1,024; json: the recursion limit)
    # parses, but encoding its key value, further down the stack, may pass the limit: the depths
    # around both limits, each, and past them (400).
    definitions = QUICK + hook(
        "pr",
        "{id: quick, input_mapping: {n: $.body.n}}",
        "  concurrency_key: $.body.pr\n  max_concurrent: 100\n  max_queued: 1000\n",
    )
    with instances(tmp_path, definitions, store_url, "a") as (a,):
        answers = {}
        for depth in [*range(900, 1001), *range(1015, 1031), 1100, 2000]:
            body = ('{"n": 1, "pr": ' + "[" * depth + "]" * depth + "}").encode()
            answers[depth] = urllib_post(a.url + "/webhooks/pr", body)[0]
        assert set(answers.values()) == {202, 400}, {d: s for d, s in answers.items() if s not in (202, 400)}
        assert not [line for line in a.log_lines() if line["message"].startswith("internal error")]


def test_a_burst_of_concurrent_webhooks_on_two_daemons_leaves_one_run(tmp_path: Path, store_url: str) -> None:
    with instances(tmp_path, BURST, store_url) as (a, b):
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(
                pool.map(lambda n: (a, b)[n % 2].request("POST", "/webhooks/burst", {"n": n, "repo": "r"}), range(32))
            )
        assert all(status == 202 for status, _ in answers), answers
        runs = settled(a, "burst", 32)
        assert [r["status"] for r in runs].count("completed") == 1, [(r["status"], r["reason"]) for r in runs]
        assert all((r["status"], r["reason"]) == ("skipped", "debounced") for r in runs if r["status"] != "completed")
