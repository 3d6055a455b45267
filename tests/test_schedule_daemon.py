"""An every-minute schedule in the real daemon fires runs that reach the store (SPEC 3.1)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.harness import running_daemon, wait_for

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: minutely
  type: schedule
  schedule: {cron: "* * * * *", timezone: Europe/Paris}
  agent:
    id: echo
    input: {kind: tick}
    input_mapping:
      at: $.scheduled_at
"""


def test_an_every_minute_schedule_fires_runs_that_reach_the_store(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    boundary = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    # Start about 6 s before a slot, not a minute; too close to one, wait for the next.
    time.sleep(((boundary - now).total_seconds() - 6) % 60)
    with running_daemon(tmp_path, DEFS) as daemon:
        _, trigger = daemon.request("GET", "/v1/triggers/minutely")
        nominal = trigger["schedule"]["next_nominal"]
        assert trigger["schedule"]["last_slot"] is None
        assert nominal.endswith(":00.000Z")
        due_in = (datetime.fromisoformat(nominal) - datetime.now(UTC)).total_seconds()
        runs = wait_for(
            lambda: daemon.request("GET", "/v1/runs?trigger=minutely")[1]["runs"],
            timeout=max(due_in, 0) + 10,  # however slowly the daemon started, its first slot plus 10 s
            what="the first scheduled run",
        )
        run = daemon.wait_run(runs[0]["id"])
        _, after = daemon.request("GET", "/v1/triggers/minutely")
    assert (run["status"], run["source"], run["nominal_time"]) == ("completed", "schedule", nominal)
    assert run["output"] == {"kind": "tick", "at": nominal}
    lag = (datetime.fromisoformat(run["created_at"]) - datetime.fromisoformat(nominal)).total_seconds()
    assert 0 <= lag < 2
    assert after["schedule"]["last_slot"] == nominal
    assert after["schedule"]["next_nominal"] > nominal
