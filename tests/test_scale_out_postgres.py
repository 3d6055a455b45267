"""Two daemons sharing one PostgreSQL store (SPEC 10): what only PostgreSQL has or only a server shows.

LISTEN/NOTIFY wake-ups, and a daemon cut off from the database. The daemons are real `triggerd
run` processes (tests/test_scale_out.py's start_daemon); the server is the session's real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Daemon, pid_alive, wait_for
from tests.servers import PostgresServer
from tests.test_claims import new_run
from tests.test_scale_out import LEASE, PY, claimed_by, instant, start_daemon, stop_all
from tests.wall_clock import Started, between_slots, due_in
from triggerd.errors import StoreError
from triggerd.store.postgres import PostgresStore

BLOCKER = (
    f"agent: {{id: sleeper, type: command, command: [{json.dumps(PY)}, -c, 'import time; time.sleep(60)']}}\n"
    "---\n"
    "trigger: {id: block, type: event, event: {pattern: never}, agent: {id: sleeper}}\n"
    "---\n"
)


def test_an_idle_daemon_starts_a_firing_stored_through_a_busy_one_within_milliseconds(
    tmp_path: Path, postgres_url: str
) -> None:
    # a is at its limits.max_concurrent_runs (1) with a long run, so only b can start the webhook's
    # runs; b learns of each through NOTIFY, else only through its poll (every second).
    definitions = (
        BLOCKER + "agent: {id: quick, type: command, command: ['true']}\n---\n"
        "trigger: {id: hook, type: webhook, webhook: {}, agent: {id: quick}}\n"
    )
    busy = "  max_concurrent_runs: 1\n"
    a = start_daemon(tmp_path, "a", definitions, postgres_url, busy)
    daemons = [a]
    try:
        a.wait_run(a.fire("block"), {"running"})
        daemons.append(start_daemon(tmp_path, "b", definitions, postgres_url))
        b = daemons[1]
        time.sleep(0.5)  # b's first claims and its listener are under way
        latencies, ids = [], []
        for _ in range(8):
            time.sleep(random.uniform(0.1, 0.6))  # at no fixed phase of b's poll
            status, answer = a.request("POST", "/webhooks/hook", {})
            assert status == 202, answer
            run = b.wait_run(answer["run_id"], timeout=10)
            ids.append(run["id"])
            latencies.append((instant(run["started_at"]) - instant(run["created_at"])).total_seconds())
        claims = claimed_by(b)
    finally:
        stop_all(daemons)
    assert set(ids) <= claims  # b ran them all
    # By poll alone each would wait a uniform 0-1s: 7 of 8 under 0.25s would happen once in 2,500 runs.
    assert sorted(latencies)[6] < 0.25, latencies
    assert statistics.median(latencies) < 0.1, latencies


def test_a_daemon_cut_off_from_the_database_answers_503_stops_its_run_and_recovers(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer
) -> None:
    # The first attempt sleeps long and writes its pid; the retry is quick.
    script = (
        "import os, pathlib, time; a = os.environ['TRIGGERD_ATTEMPT']; "
        "pathlib.Path('attempt-' + a).write_text(str(os.getpid())); time.sleep(60 if a == '1' else 0)"
    )
    definitions = (
        f"agent: {{id: sleeper, type: command, command: [{json.dumps(PY)}, -c, {json.dumps(script)}], "
        f"working_dir: {json.dumps(str(tmp_path))}}}\n"
        "---\n"
        "trigger: {id: park, type: event, event: {pattern: never}, agent: {id: sleeper}, "
        "retry: {max_attempts: 2, backoff: 1s, max_backoff: 1s}}\n"
        "---\n"
        "trigger: {id: hook, type: webhook, webhook: {}, agent: {id: sleeper}}\n"
    )
    a = start_daemon(tmp_path, "a", definitions, postgres_url)
    try:
        park = a.fire("park")
        pid = int(wait_file(tmp_path / "attempt-1"))
        assert pid_alive(pid)
        try:
            postgres_server.stop("fast")
            cut_at = time.monotonic()
            # its lease not renewed for 2/3 of it, a stops the attempt's process
            wait_for_gone(pid, timeout=LEASE + 5)
            stopped_after = time.monotonic() - cut_at
            wait_status(a, "/readyz", 503, timeout=10)
            status, _ = a.request("POST", "/webhooks/hook", {})
            assert status == 503
            time.sleep(LEASE)  # cut off beyond the lease: another daemon could have taken it over
        finally:
            if not postgres_server.running():
                postgres_server.start()
        wait_status(a, "/readyz", 200, timeout=30)
        status, answer = a.request("POST", "/webhooks/hook", {})
        assert status == 202, answer
        final = a.wait_run(park, timeout=30)
        lines = a.log_lines()
    finally:
        stop_all([a])
    assert stopped_after < LEASE  # renewed at most a third of a lease before the cut, stopped 2/3 after
    assert any("lease not renewed in time" in line["message"] for line in lines)
    assert final["status"] == "completed"
    assert [(x["number"], x["status"], x["error"]) for x in final["attempts"]] == [
        (1, "failed", "interrupted"),
        (2, "completed", None),
    ]


def test_the_listener_hears_other_daemons_writes_not_its_own_and_listens_again_after_the_server_returns(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        heard: list[str] = []
        mine, other = PostgresStore(postgres_url), PostgresStore(postgres_url)
        await mine.open()
        await other.open()
        try:
            await mine.listen(heard.append)
            await wait_async(lambda: heard == ["listening"], "the listener to connect")
            await mine.create_run(new_run("t"))  # its own write: its dispatcher already knows
            await other.create_run(new_run("t"))
            await wait_async(lambda: len(heard) == 2, "a notification")
            await asyncio.sleep(0.3)  # had its own write been heard, it would be by now
            before = list(heard)
            try:
                postgres_server.stop("fast")
            finally:
                postgres_server.start()
            await wait_async(lambda: len(heard) == 3, "the listener to connect again")
            with contextlib.suppress(StoreError):
                await other.create_run(new_run("t"))  # fails once: its writer's connection was dropped
            await other.create_run(new_run("t"))
            await wait_async(lambda: len(heard) >= 4, "a notification after the restart")
            return before, heard[2:3], heard[3:]
        finally:
            await mine.close()
            await other.close()

    before, again, after = asyncio.run(scenario())
    assert before == ["listening", "created"]
    assert again == ["listening"]  # told once after reconnecting: what was sent meanwhile is lost
    assert set(after) == {"created"}  # (the failed commit may have committed: then twice)


async def wait_async(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def wait_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return path.read_text()


def wait_status(daemon: Daemon, path: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while daemon.request("GET", path)[0] != status:
        assert time.monotonic() < deadline, f"{path} did not answer {status} within {timeout}s"
        time.sleep(0.1)


def wait_for_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs {timeout}s after the database went away"
        time.sleep(0.05)


def test_every_minute_schedules_on_both_daemons_fire_each_slot_once(minutely_pair: Started) -> None:
    # Both daemons load the same three schedules and both fire every slot; the store keeps one run per
    # (trigger, slot), whichever daemon's firing committed first. The daemons started with the test
    # session (tests/wall_clock.py): the session's server stops now and then meanwhile (other tests
    # cut daemons off from it), so the first slot, fired right after the start, is checked in full.
    a, b = minutely_pair.daemons
    nominal = minutely_pair.trigger["schedule"]["next_nominal"]

    def runs_of_ticks() -> list[dict[str, Any]] | None:
        """Every run of the three triggers; None while a's store answers 503 (just after a restart)."""
        answers = [a.request("GET", f"/v1/runs?trigger=tick{i}&limit=1000") for i in range(3)]
        return None if any(status != 200 for status, _ in answers) else [r for _, body in answers for r in body["runs"]]

    def first_slot() -> list[dict[str, Any]]:
        runs = [r for r in runs_of_ticks() or [] if r["nominal_time"] == nominal]
        return runs if len(runs) >= 3 and all(r["status"] == "completed" for r in runs) else []

    runs = wait_for(first_slot, timeout=due_in(nominal) + 15, what="a run of each schedule's first slot")
    between_slots()  # the later daemon's firings of every slot so far have been decided too
    every = wait_for(runs_of_ticks, timeout=15, what="the runs, from a store that answers")
    created = [line["run_id"] for d in (a, b) for line in d.log_lines() if line["message"].startswith("run created")]
    assert sorted((r["trigger_id"], r["nominal_time"]) for r in runs) == [(f"tick{i}", nominal) for i in range(3)]
    # the other daemon's firing of each slot was the same run, not a second one: each run created
    # once, by one daemon, and no run created that the store does not hold
    assert len(set(created)) == len(created)
    assert {r["id"] for r in runs} <= set(created) <= {r["id"] for r in every}
    slots = [(r["trigger_id"], r["nominal_time"]) for r in every]
    assert len(set(slots)) == len(slots)
    assert {r["source"] for r in every} == {"schedule"}
