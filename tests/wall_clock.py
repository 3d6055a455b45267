"""A pytest plugin: daemons that must see a real minute boundary start with the session.

An every-minute schedule in a real daemon (tests/test_schedule_daemon.py, and two daemons on one
PostgreSQL store in tests/test_scale_out_postgres.py) fires only when the wall clock crosses a
minute. Those tests used to sleep until just before one: up to a minute each. Their daemons are
session fixtures here instead, started before the first test when such a test was collected, and
the minute passes while the rest of the suite runs; the test checks what they did when its turn
comes (waiting for the first slot still, when the session was shorter than that).

A fixture that cannot start (no PostgreSQL here) does not hold up the session: pytest keeps its
skip or failure, and the test that asks for it gets it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.harness import Daemon, running_daemon, start_instance, stop_all
from tests.servers import PostgresServer

MINUTELY = """\
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

# Both daemons load the same three schedules in three time zones and both fire every slot.
TICKS = "agent: {id: echo, type: command, command: [cat]}\n" + "".join(
    f"---\ntrigger: {{id: tick{i}, type: schedule, schedule: {{cron: '* * * * *', timezone: {zone}}}, "
    "agent: {id: echo}}\n"
    for i, zone in enumerate(["UTC", "Europe/Paris", "Asia/Kolkata"])
)

# In this order: the PostgreSQL server and its pair first, so that the lone daemon's first slot
# does not fall due while they start (its test checks that slot's lag).
EARLY = ("minutely_pair", "minutely_daemon")


@dataclass
class Started:
    """Daemons started at the session's start, and their trigger as first seen (GET /v1/triggers/ID)."""

    daemons: list[Daemon]
    trigger: dict[str, Any]


@pytest.fixture(scope="session", autouse=True)
def _start_early(request: pytest.FixtureRequest) -> None:
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for name in (name for name in EARLY if name in wanted):
        # Whatever it raises is kept by pytest for the test that asks for the fixture, and only that
        # test fails or is skipped; raised here, it would be every test's setup error.
        with contextlib.suppress(Exception, pytest.skip.Exception, pytest.fail.Exception):
            request.getfixturevalue(name)


@pytest.fixture(scope="session")
def minutely_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """One daemon (SQLite) with an every-minute schedule in Europe/Paris, mapping $.scheduled_at."""
    clear_of_a_boundary()
    with running_daemon(tmp_path_factory.mktemp("minutely"), MINUTELY) as daemon:
        yield Started([daemon], daemon.request("GET", "/v1/triggers/minutely")[1])


@pytest.fixture(scope="session")
def minutely_pair(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Started]:
    """Daemons a and b (a 2 s lease) on one fresh PostgreSQL database, both with TICKS."""
    root, url = tmp_path_factory.mktemp("minutely-pair"), postgres_server.database()
    daemons: list[Daemon] = []
    clear_of_a_boundary()
    try:
        for name in "ab":
            daemons.append(start_instance(root, name, TICKS, url, "2s"))
        yield Started(daemons, daemons[0].request("GET", "/v1/triggers/tick0")[1])
    finally:
        stop_all(daemons)


def due_in(nominal: str) -> float:
    """Seconds until the slot `nominal` (an ISO instant), 0 when past."""
    return max((datetime.fromisoformat(nominal) - datetime.now(UTC)).total_seconds(), 0.0)


def clear_of_a_boundary(before: float = 10.0) -> None:
    """Return at least `before` seconds ahead of the next minute boundary (sleeping past it if need
    be), so that a daemon started now says which slot comes first before it falls due."""
    now = datetime.now(UTC)
    left = 60 - now.second - now.microsecond / 1e6
    if left < before:
        time.sleep(left + 0.5)


def between_slots(after: float = 4.0, before: float = 10.0) -> None:
    """Return at least `after` seconds past the last minute boundary and `before` seconds ahead of
    the next, so that what every daemon does about a slot is decided and none falls due while a
    test reads."""
    now = datetime.now(UTC)
    second = now.second + now.microsecond / 1e6
    if second < after:
        time.sleep(after - second)
    elif second > 60 - before:
        time.sleep(60 - second + after)
