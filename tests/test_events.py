"""Events through the running daemon's HTTP API (SPEC 3.4, 5.3)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.harness import FIXTURES, Daemon, running_daemon, wait_for, write_config
from triggerd.clock import isoformat
from triggerd.config.models import StoreSettings
from triggerd.store import open_store

PY = json.dumps(sys.executable)


def error(kind: str = "error.db", severity: str = "high", source: str = "system", **data: Any) -> dict[str, Any]:
    return {"type": kind, "source": source, "severity": severity, "data": data}


def emit(daemon: Daemon, *events: dict[str, Any]) -> dict[str, Any]:
    status, answer = daemon.request("POST", "/v1/events", list(events))
    assert status == 202, answer
    return dict(answer)


def compat_daemon(root: Path) -> Daemon:
    port = write_config(root, "")
    (root / "defs" / "all.yaml").unlink()
    for name in ("agents.yaml", "error-handler.yaml"):
        shutil.copy(FIXTURES / "compat" / name, root / "defs" / name)
    return Daemon(root, port, {"PATH": os.environ["PATH"]}).start()


def test_the_compat_error_handler_fires_once_per_five_high_errors_from_system(tmp_path: Path) -> None:
    daemon = compat_daemon(tmp_path)
    try:
        four = emit(daemon, *(error() for _ in range(4)))
        assert (four["matched"], four["run_ids"]) == (["error-handler"], [])
        low = emit(daemon, error(severity="low"), error(source="web"), error(kind="warning.db"))
        assert (low["matched"], low["run_ids"]) == ([], [])  # none of these counts
        fifth = emit(daemon, error(service="db"))
        assert len(fifth["run_ids"]) == 1
        run = daemon.wait_run(fifth["run_ids"][0])
        again = emit(daemon, *(error() for _ in range(4)))
        assert again["run_ids"] == []  # the sixth starts a new count
        tenth = emit(daemon, error())
        assert len(tenth["run_ids"]) == 1
    finally:
        daemon.stop()
    assert run["status"] == "completed"
    context = run["input"]["trigger_context"]
    assert run["input"]["include_context"] is True
    assert context["count"] == 5
    assert [e["type"] for e in context["events"]] == ["error.db"] * 5
    assert context["event"]["data"] == {"service": "db"}
    assert run["output"] == {"analysis": run["input"]}
    assert run["source"] == "event"
    assert run["chain_depth"] == 1


GROUPED = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: per-service
  type: event
  event:
    pattern: "app.*.error"
    source: ["svc-*"]
    count_threshold: 2
    window: 1m
    group_by: $.event.data.service
  agent:
    id: echo
    input_mapping:
      service: $.event.data.service
      count: $.count
"""


def test_counting_per_group(tmp_path: Path, store_url: str) -> None:
    with running_daemon(tmp_path, GROUPED, store=store_url) as daemon:

        def app_error(service: str) -> dict[str, Any]:
            return {"type": "app.checkout.error", "source": f"svc-{service}", "data": {"service": service}}

        assert emit(daemon, app_error("a"), app_error("b"))["run_ids"] == []
        fired = emit(daemon, app_error("a"))["run_ids"]
        assert len(fired) == 1
        assert daemon.wait_run(fired[0])["input"] == {"service": "a", "count": 2}
        assert len(emit(daemon, app_error("b"))["run_ids"]) == 1
        other = emit(daemon, {"type": "app.checkout.error", "source": "other", "data": {"service": "a"}})
        assert (other["matched"], other["run_ids"]) == ([], [])  # source not in the list


OUTBOX = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: bursts
  type: event
  event: {pattern: "app.*", count_threshold: 2, window: 1h}
  agent:
    id: echo
    input_mapping:
      count: $.count
      events: $.events
"""


HOUR = timedelta(hours=1)


def app_event(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "type": "app.error", "source": "svc", "time": "2026-01-01T00:00:00Z", "data": {}}


async def crossed_and_died(store_url: str, *event_ids: str) -> None:
    """What a daemon that died between a crossing's commit and its run's leaves in the store: the
    daemon's own count_event, with no run for the crossing."""
    store = open_store(StoreSettings(store_url))
    await store.open()
    try:
        now = datetime.now(UTC)
        for event_id in event_ids:
            entry = {"received_at": isoformat(now), "event": app_event(event_id)}
            counted = await store.count_event("bursts", "", "previous", entry, isoformat(now - HOUR), len(event_ids))
        assert counted is not None
    finally:
        await store.close()


def test_a_crossing_a_crash_left_without_its_run_fires_once_after_restart(tmp_path: Path, store_url: str) -> None:
    """The counting windows' outbox (SPEC 9, 10): a crossing committed by a daemon that died
    before its run was made becomes exactly one run when a daemon starts on the store again, with
    the counted events as input; a second start makes none, and a redelivery of the event that
    completed the window is not counted into the next one."""
    with running_daemon(tmp_path, OUTBOX, store=store_url) as daemon:
        assert daemon.request("GET", "/v1/runs?trigger=bursts")[1]["runs"] == []

    asyncio.run(crossed_and_died(store_url, "e1", "e2"))

    def runs(daemon: Daemon) -> list[dict[str, Any]]:
        return list(daemon.request("GET", "/v1/runs?trigger=bursts")[1]["runs"])

    daemon = Daemon(tmp_path, daemon.port, daemon.env).start()
    try:
        (run,) = runs(daemon)
        run = daemon.wait_run(run["id"])
    finally:
        daemon.stop()
    assert run["input"]["count"] == 2
    assert [e["id"] for e in run["input"]["events"]] == ["e1", "e2"]
    assert run["output"] == run["input"]

    daemon = Daemon(tmp_path, daemon.port, daemon.env).start()
    try:
        assert [r["id"] for r in runs(daemon)] == [run["id"]]
        assert emit(daemon, app_event("e2"))["run_ids"] == []  # redelivered: held by the crossing
        assert emit(daemon, app_event("e3"))["run_ids"] == []  # the first of the next window
        assert len(emit(daemon, app_event("e4"))["run_ids"]) == 1
    finally:
        daemon.stop()


def test_a_reload_fires_the_crossing_another_daemon_left(tmp_path: Path, store_url: str) -> None:
    """Pending crossings are fired on each reload too: a daemon sharing the store died after one."""
    with running_daemon(tmp_path, OUTBOX, store=store_url) as daemon:
        asyncio.run(crossed_and_died(store_url, "r1", "r2", "r3"))
        assert daemon.request("GET", "/v1/runs?trigger=bursts")[1]["runs"] == []
        status, answer = daemon.request("POST", "/v1/reload")
        assert status == 200, answer
        (run,) = daemon.request("GET", "/v1/runs?trigger=bursts")[1]["runs"]
        assert daemon.wait_run(run["id"])["input"]["count"] == 3


CHAIN = f"""\
agent:
  id: flaky
  type: command
  command: [{PY}, -c, "import sys; sys.exit(3)"]
---
agent: {{id: echo, type: command, command: [cat]}}
---
trigger:
  id: job
  type: event
  event: {{pattern: never}}
  agent: {{id: flaky}}
  retry: {{max_attempts: 2, backoff: 1s, max_backoff: 1s}}
---
trigger:
  id: on-failure
  type: event
  event:
    pattern: error.agent.*
    source: [agents]
    condition: {{field: $.event.data.trigger_id, operator: eq, value: job}}
  agent:
    id: echo
    input_mapping:
      failed: $.event.data.run_id
      kind: $.event.type
      severity: $.event.severity
---
trigger:
  id: loop
  type: event
  event:
    pattern: agent.run.completed
    condition: {{"$.event.data.trigger_id": loop}}
  agent: {{id: echo}}
"""


def test_a_failing_runs_events_start_another_triggers_run(tmp_path: Path) -> None:
    with running_daemon(tmp_path, CHAIN) as daemon:
        failed = daemon.wait_run(daemon.fire("job"), timeout=20)
        assert failed["status"] == "failed"

        def follow_ups() -> list[dict[str, Any]]:
            runs = daemon.request("GET", "/v1/runs?trigger=on-failure")[1]["runs"]
            return runs if len(runs) == 2 else []

        runs = [daemon.wait_run(r["id"]) for r in wait_for(follow_ups, timeout=10)]
    kinds = sorted((r["input"]["kind"], r["input"]["severity"]) for r in runs)
    assert kinds == [("error.agent.dead_letter", "critical"), ("error.agent.run_failed", "high")]
    assert {r["input"]["failed"] for r in runs} == {failed["id"]}
    assert {r["chain_depth"] for r in runs} == {1}


def test_a_self_feeding_chain_stops_at_the_depth_limit(tmp_path: Path) -> None:
    with running_daemon(tmp_path, CHAIN, "limits:\n  max_event_chain_depth: 3\n") as daemon:
        daemon.wait_run(daemon.fire("loop"))

        def chain() -> list[dict[str, Any]]:
            runs = daemon.request("GET", "/v1/runs?trigger=loop")[1]["runs"]
            done = [r for r in runs if r["status"] == "completed"]
            return runs if len(done) == 4 else []

        runs = wait_for(chain, timeout=15)
        dropped = wait_for(
            lambda: [line for line in daemon.log_lines() if "dropped: chain depth" in line["message"]], timeout=5
        )
        import time

        time.sleep(0.5)  # nothing more may come
        assert len(daemon.request("GET", "/v1/runs?trigger=loop")[1]["runs"]) == 4
    assert sorted(r["chain_depth"] for r in runs) == [0, 1, 2, 3]
    assert dropped[0]["chain_depth"] == 3


def test_event_api_validation_and_cloudevents(tmp_path: Path) -> None:
    with running_daemon(tmp_path, GROUPED) as daemon:
        cloud = {
            "specversion": "1.0",
            "type": "app.x.error",
            "source": "svc-z",
            "id": "ce-1",
            "time": "2026-11-21T10:00:00+01:00",
            "data": {"service": "z"},
        }
        assert emit(daemon, cloud)["event_ids"] == ["ce-1"]
        for body, message in [
            ({"source": "x"}, "event 0: 'type' is required and must be a non-empty string"),
            ([{"type": "a"}, {"type": "b", "severity": "loud"}], "event 1: unknown severity 'loud'"),
            ({"type": "a", "time": "yesterday"}, "event 0: 'time' must be an RFC 3339 instant with an offset"),
            ({"type": "a", "specversion": "0.3"}, "event 0: only CloudEvents specversion 1.0 is accepted"),
            ([], "no events given"),
            ([{"type": "a"}] * 1001, "at most 1000 events per request, got 1001"),
            ("text", "event 0: an event is a JSON object"),
        ]:
            status, answer = daemon.request("POST", "/v1/events", body)
            assert status == 400
            assert answer["error"].startswith(message)


def test_windows_survive_a_restart_unless_the_trigger_changed(tmp_path: Path, store_url: str) -> None:
    with running_daemon(tmp_path, GROUPED, store=store_url) as daemon:
        event = {"type": "app.pay.error", "source": "svc-a", "data": {"service": "a"}}
        emit(daemon, event)
        daemon.stop()
        daemon.start()
        assert len(emit(daemon, event)["run_ids"]) == 1  # the count went on across the restart
        emit(daemon, event)
        daemon.stop()
        (tmp_path / "defs" / "all.yaml").write_text(GROUPED.replace("window: 1m", "window: 2m"))
        daemon.start()
        assert emit(daemon, event)["run_ids"] == []  # a changed definition counts afresh
        assert len(emit(daemon, event)["run_ids"]) == 1


def test_emit_command(tmp_path: Path) -> None:
    with running_daemon(tmp_path, GROUPED):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "triggerd",
                "emit",
                "app.cli.error",
                "--source",
                "svc-q",
                "--severity",
                "high",
                "--data",
                '{"service": "q"}',
                "--config",
                "triggerd.yaml",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"PATH": os.environ["PATH"]},
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 1)[1] == "matched: per-service; runs: none\n"


def test_a_timed_out_run_emits_run_timed_out(tmp_path: Path) -> None:
    defs = (
        f"agent: {{id: slow, type: command, command: [{PY}, -c, 'import time; time.sleep(30)']}}\n---\n"
        "agent: {id: echo, type: command, command: [cat]}\n---\n"
        "trigger: {id: slow, type: event, event: {pattern: never}, agent: {id: slow}, timeout_seconds: 1}\n---\n"
        "trigger:\n  id: watch\n  type: event\n  event: {pattern: error.agent.run_timed_out, source: [agents]}\n"
        "  agent: {id: echo, input_mapping: {run: $.event.data.run_id, severity: $.event.severity}}\n"
    )
    with running_daemon(tmp_path, defs) as daemon:
        timed_out = daemon.wait_run(daemon.fire("slow"), timeout=15)
        runs = wait_for(lambda: daemon.request("GET", "/v1/runs?trigger=watch")[1]["runs"], timeout=10)
        watched = daemon.wait_run(runs[0]["id"])
    assert timed_out["status"] == "timed_out"
    assert watched["input"] == {"run": timed_out["id"], "severity": "high"}


def test_a_request_waiting_for_its_counts_does_not_hold_up_the_next(tmp_path: Path) -> None:
    """Issue 17: the bus held its lock until a request's counts were committed, so concurrent
    POST /v1/events waited for each other's commits; now only planning is serialized."""
    from triggerd.config.loader import load
    from triggerd.dispatch.dispatcher import Dispatcher
    from triggerd.sources.bus import EventBus
    from triggerd.sources.events import parse_events
    from triggerd.store.sqlite import SqliteStore

    gate = asyncio.Event()

    class GatedStore(SqliteStore):
        async def count_event(self, trigger_id: str, *args: Any) -> Any:
            if trigger_id == "slow":  # the first request's count waits until the second is answered
                await gate.wait()
            return await super().count_event(trigger_id, *args)

    (tmp_path / "defs.yaml").write_text(
        'agent: {id: noop, type: command, command: ["true"]}\n'
        + "".join(
            f"---\ntrigger:\n  id: {name}\n  type: event\n  agent: {{id: noop}}\n"
            f"  event: {{pattern: '{name}.*', count_threshold: 1000, window: 1h}}\n"
            for name in ("slow", "fast")
        )
    )

    async def scenario() -> bool:
        configuration = load(None, paths=[tmp_path / "defs.yaml"], env={}).configuration
        assert configuration is not None, "definitions did not load"
        store = GatedStore(tmp_path / "store.db")
        await store.open()
        dispatcher = Dispatcher(store, configuration)
        await dispatcher.start()
        bus = EventBus(dispatcher, store, dispatcher.clock, 8)
        now = datetime.now(UTC)
        try:
            first = asyncio.create_task(bus.publish(parse_events([{"type": "slow.x"}], now)))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(bus.publish(parse_events([{"type": "fast.x"}], now)))
            done, _ = await asyncio.wait({second}, timeout=5)
            answered_alone = second in done and not first.done()
            gate.set()
            await asyncio.wait_for(first, 5)
            return answered_alone
        finally:
            gate.set()
            await dispatcher.drain(0.1)
            await store.close()

    assert asyncio.run(scenario())
