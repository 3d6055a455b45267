"""Two daemons sharing one store (SPEC 10): claims, leases, limits, cancel, instances, over both stores.

Each daemon is a real `triggerd run` with its own settings, port and instance name; both name
the same store: one SQLite file (WAL mode serves several processes on one machine), or one
PostgreSQL database. Leases are 2s, so that a takeover happens within the test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Write, found
from tests.harness import Daemon, http, pid_alive, start_instance, stop_all, wait_for
from triggerd.config.loader import LoadMode, load

PY = sys.executable
LEASE = 2.0


def start_daemon(tmp_path: Path, name: str, definitions: str, store: str, limits: str = "") -> Daemon:
    """An instance with the short lease of this module (and of tests/test_scale_out_postgres.py)."""
    return start_instance(tmp_path, name, definitions, store, f"{LEASE:g}s", limits)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def claimed_by(daemon: Daemon) -> set[str]:
    return {line["run_id"] for line in daemon.log_lines() if line["message"].startswith("run claimed")}


def test_webhooks_to_both_daemons_run_once_each_and_max_concurrent_holds_across_them(
    tmp_path: Path, store_url: str
) -> None:
    definitions = (
        f"agent: {{id: nap, type: command, command: [{json.dumps(PY)}, -c, 'import time; time.sleep(0.2)']}}\n"
        "---\n"
        "trigger: {id: hook, type: webhook, webhook: {}, agent: {id: nap}, max_concurrent: 1}\n"
    )
    daemons = [start_daemon(tmp_path, "a", definitions, store_url), start_daemon(tmp_path, "b", definitions, store_url)]
    try:
        accepted: dict[str, str] = {}
        # Paced, then in a burst: paced, each firing finds the trigger idle and the daemon it came
        # to claims it (runs spread over both); in the burst both claim while the other runs.
        for i, daemon in zip(range(16), itertools.cycle(daemons), strict=False):
            status, answer = http("POST", f"{daemon.url}/webhooks/hook", {"n": i})
            assert status == 202, answer
            accepted[answer["run_id"]] = daemon.url
            time.sleep(0.4 if i < 6 else 0)
        a, b = daemons
        runs = [b.wait_run(run_id, timeout=30) for run_id in accepted]
        status, listed = a.request("GET", "/v1/instances")
        everything = a.request("GET", "/v1/runs?trigger=hook&limit=100")[1]["runs"]
        claims = [claimed_by(daemon) for daemon in daemons]
    finally:
        stop_all(daemons)
    assert set(accepted.values()) == {a.url, b.url}  # the firings came in through both
    assert sorted(r["id"] for r in everything) == sorted(accepted)  # one run per accepted firing, no more
    assert all(r["status"] == "completed" for r in runs)
    assert all(len(r["attempts"]) == 1 for r in runs)  # each ran once, on one daemon
    assert claims[0].isdisjoint(claims[1]) and claims[0] | claims[1] == set(accepted)
    assert claims[0] and claims[1]  # both daemons ran runs of the trigger
    spans = sorted((instant(r["started_at"]), instant(r["finished_at"])) for r in runs)
    for (_, earlier_end), (later_start, _) in itertools.pairwise(spans):
        assert later_start >= earlier_end  # max_concurrent 1: never two at once, whichever daemon ran them
    assert status == 200
    assert [(i["id"], i["address"]) for i in listed["instances"]] == [
        ("a", f"127.0.0.1:{a.port}"),
        ("b", f"127.0.0.1:{b.port}"),
    ]
    assert all(instant(i["started"]) <= instant(i["last_seen"]) for i in listed["instances"])


def test_a_cancel_through_one_daemon_stops_a_run_on_the_other_and_a_killed_daemons_run_is_taken_over(
    tmp_path: Path, store_url: str
) -> None:
    # Each attempt writes its pid to a file named after its run's trigger and attempt; the first
    # attempt of `park` sleeps long, the retry a moment.
    script = (
        "import os, pathlib, time; a = os.environ['TRIGGERD_ATTEMPT']; "
        "pathlib.Path(os.environ['TRIGGERD_TRIGGER_ID'] + '-' + a).write_text(str(os.getpid())); "
        "time.sleep(60 if a == '1' else 0.2)"
    )
    definitions = (
        f"agent: {{id: sleeper, type: command, command: [{json.dumps(PY)}, -c, {json.dumps(script)}], "
        f"working_dir: {json.dumps(str(tmp_path))}}}\n"
        "---\n"
        "trigger: {id: park, type: event, event: {pattern: never}, agent: {id: sleeper}, "
        "retry: {max_attempts: 2, backoff: 1s, max_backoff: 1s}}\n"
        "---\n"
        "trigger: {id: victim, type: event, event: {pattern: never}, agent: {id: sleeper}}\n"
    )

    def pid(name: str) -> int:
        path = tmp_path / name
        return int(wait_for(lambda: path.exists() and path.read_text(), timeout=15, what=name))

    daemons = [start_daemon(tmp_path, "a", definitions, store_url)]
    try:
        a = daemons[0]
        park, victim = a.fire("park"), a.fire("victim")
        park_pid, victim_pid = pid("park-1"), pid("victim-1")
        daemons.append(start_daemon(tmp_path, "b", definitions, store_url))
        b = daemons[1]
        # b started beside a live a: it took nothing of a's over
        assert a.run(park)["status"] == "running" and pid_alive(park_pid)
        status, cancelled = b.request("POST", f"/v1/runs/{victim}/cancel")
        victim_gone = not pid_alive(victim_pid)
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = datetime.now().astimezone()
        assert pid_alive(park_pid), "the agent died with its daemon: nothing to take over"
        final: dict[str, Any] = b.wait_run(park, timeout=20)
        park_gone = not pid_alive(park_pid)
        claims = claimed_by(b)
    finally:
        stop_all(daemons)
        for name in ("park-1", "victim-1"):  # never leave an agent behind, whatever failed
            leader = tmp_path / name
            if leader.exists() and leader.read_text() and pid_alive(int(leader.read_text())):
                os.killpg(int(leader.read_text()), signal.SIGKILL)
    assert status == 200
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "requested")
    assert victim_gone
    assert final["status"] == "completed"
    assert [(x["number"], x["status"], x["error"]) for x in final["attempts"]] == [
        (1, "failed", "interrupted"),
        (2, "completed", None),
    ]
    assert claims == {park}  # b ran only the retry
    first, second = final["attempts"]
    # taken over only once the lease ran out (a renewed it at most a third of a lease before it died)
    assert (instant(first["finished_at"]) - killed_at).total_seconds() >= LEASE / 2
    assert instant(second["started_at"]) >= instant(first["finished_at"])
    assert park_gone  # the taker ended the first attempt's process group (same machine)


def test_events_counted_through_both_daemons_fire_once_per_threshold(tmp_path: Path, store_url: str) -> None:
    definitions = (
        "agent: {id: echo, type: command, command: [cat]}\n---\n"
        "trigger: {id: third, type: event, event: {pattern: app.error, count_threshold: 3, window: 5m}, "
        "agent: {id: echo, input_mapping: {count: $.count}}}\n"
    )
    daemons = [start_daemon(tmp_path, "a", definitions, store_url), start_daemon(tmp_path, "b", definitions, store_url)]
    try:
        fired = []
        a, b = daemons
        for daemon in [a, b, a, a, b, a]:  # neither daemon alone receives a multiple of the threshold
            status, answer = daemon.request("POST", "/v1/events", [{"type": "app.error", "source": "svc"}])
            assert status == 202, answer
            fired.extend(answer["run_ids"])
        runs = [daemons[0].wait_run(run_id) for run_id in fired]
    finally:
        stop_all(daemons)
    assert [r["input"] for r in runs] == [{"count": 3}, {"count": 3}]


def test_a_lease_under_a_second_is_a_problem_at_its_line_and_the_lease_defaults_to_30s(write: Write) -> None:
    short = write("triggerd.yaml", 'store:\n  instance: "a"\n  lease: 0\n')
    assert [p for p in found(load(short, mode=LoadMode.VALIDATE, env={})) if p[2] == "error"] == [
        (str(short), 3, "error", "must be at least 1s: a lease is renewed every third of it")
    ]
    plain = write("plain.yaml", "logging: {level: info}\n")
    configuration = load(plain, mode=LoadMode.VALIDATE, env={}).configuration
    assert configuration is not None
    assert (configuration.settings.store.instance, configuration.settings.store.lease) == ("", 30.0)
