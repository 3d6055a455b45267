"""An every-minute schedule in the real daemon fires runs that reach the store (SPEC 3.1).

The daemon starts with the test session (tests/wall_clock.py), so that its minutes pass while the
rest of the suite runs: by this test's turn it has usually fired several slots.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.harness import wait_for
from tests.wall_clock import Started, between_slots, due_in
from triggerd.clock import isoformat


def test_an_every_minute_schedule_fires_runs_that_reach_the_store(minutely_daemon: Started) -> None:
    (daemon,) = minutely_daemon.daemons
    first = minutely_daemon.trigger["schedule"]  # as the daemon said right after it started
    nominal = first["next_nominal"]
    assert first["last_slot"] is None
    assert nominal.endswith(":00.000Z")
    wait_for(
        lambda: daemon.request("GET", "/v1/runs?trigger=minutely")[1]["runs"],
        timeout=due_in(nominal) + 10,  # however slowly the daemon started, its first slot plus 10 s
        what="the first scheduled run",
    )
    between_slots()
    listed = daemon.request("GET", "/v1/runs?trigger=minutely&limit=1000")[1]["runs"]
    _, after = daemon.request("GET", "/v1/triggers/minutely")
    runs = sorted((daemon.wait_run(r["id"]) for r in listed), key=lambda r: str(r["nominal_time"]))
    start = datetime.fromisoformat(nominal)
    slots = [r["nominal_time"] for r in runs]
    assert slots == [isoformat(start + timedelta(minutes=n)) for n in range(len(runs))]  # each slot once, none missed
    assert {(r["status"], r["source"]) for r in runs} == {("completed", "schedule")}
    assert [r["output"] for r in runs] == [{"kind": "tick", "at": s} for s in slots]
    lag = (datetime.fromisoformat(runs[0]["created_at"]) - start).total_seconds()
    assert 0 <= lag < 2
    assert after["schedule"]["last_slot"] == slots[-1]
    assert after["schedule"]["next_nominal"] > slots[-1]
