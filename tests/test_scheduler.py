"""The schedule loop with an injected clock: catch-up, missed slots, restarts, clock steps (SPEC 3.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter

from tests.harness import FakeClock
from triggerd.config.loader import load
from triggerd.config.models import StoreSettings
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.runs import Run
from triggerd.sources.schedule import Scheduler, catch_up
from triggerd.store import open_store
from triggerd.store.abc import Store


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_catch_up_fires_the_latest_within_the_window_once() -> None:
    due = [utc(f"2026-01-01T{h:02d}:00:00Z") for h in (10, 11, 12, 13)]
    now = utc("2026-01-01T13:20:00Z")
    decision = catch_up(due, now, 3600)
    assert decision.fire == due[3]
    assert decision.missed == due[:3]
    assert catch_up(due, now, 0).fire is None
    assert catch_up(due, now, 0).missed == due
    assert catch_up(due, utc("2026-01-01T18:00:00Z"), 3600).fire is None  # all older than the window


def definitions(cron: str, zone: str = "UTC", window: str = "90m") -> str:
    return (
        'agent: {id: noop, type: command, command: ["true"]}\n---\n'
        f"trigger:\n  id: tick\n  type: schedule\n  schedule: {{cron: '{cron}', timezone: {zone}, "
        f"catchup_window: {window}}}\n  agent: {{id: noop, input: {{k: v}}}}\n"
    )


@asynccontextmanager
async def scheduler(folder: Path, clock: FakeClock, defs: str, url: str = "") -> AsyncIterator[tuple[Scheduler, Store]]:
    (folder / "defs").mkdir(exist_ok=True)
    (folder / "defs" / "all.yaml").write_text(defs)
    configuration = load(None, paths=[folder / "defs"], env={}).configuration
    assert configuration is not None and configuration.triggers
    store = open_store(StoreSettings(url or f"sqlite:///{folder / 'store.db'}"))
    await store.open()
    dispatcher = Dispatcher(store, configuration, clock=clock)
    await dispatcher.start()
    schedule = Scheduler(dispatcher, store, clock)
    await schedule.start()
    try:
        yield schedule, store
    finally:
        await schedule.stop()
        await dispatcher.drain(0.1)
        await store.close()


async def runs_of(store: Store) -> list[Run]:
    return sorted(await store.list_runs(trigger_id="tick", limit=1000), key=lambda r: r.nominal_time or "")


async def until(predicate: Callable[[], Any]) -> None:
    async with asyncio.timeout(5):
        while not await predicate():  # noqa: ASYNC110 - polls the store, which has no change event
            await asyncio.sleep(0.02)


def summary(runs: list[Run]) -> list[tuple[str | None, str, str | None]]:
    return [(r.nominal_time, str(r.source), r.reason) for r in runs]


def test_downtime_across_several_slots_fires_the_latest_once_and_records_the_rest_missed(
    tmp_path: Path, store_url: str
) -> None:
    clock = FakeClock(utc("2026-01-01T10:59:00Z"))

    async def scenario() -> None:
        async with scheduler(tmp_path, clock, definitions("0 * * * *"), store_url) as (schedule, store):
            assert schedule.state("tick") == {
                "next_nominal": "2026-01-01T11:00:00.000Z",
                "next_fire_at": "2026-01-01T11:00:00.000Z",
                "last_slot": None,
            }
            clock.current = utc("2026-01-01T11:00:00.500Z")
            schedule.wake()
            await until(lambda: _count(store, 1))
        clock.current = utc("2026-01-01T15:20:00Z")  # down from 11:00 to 15:20
        async with scheduler(tmp_path, clock, definitions("0 * * * *"), store_url) as (schedule, store):
            runs = await runs_of(store)
            assert [str(r.status) for r in runs[1:4]] == ["skipped"] * 3
            assert [r.nominal_time for r in runs] == [f"2026-01-01T{h}:00:00.000Z" for h in (11, 12, 13, 14, 15)]
            assert [r.reason for r in runs] == [None, "missed", "missed", "missed", None]
            assert runs[4].input == {
                "k": "v",
                "trigger_context": {
                    "scheduled_at": "2026-01-01T15:00:00.000Z",
                    "fired_at": "2026-01-01T15:20:00.000Z",
                    "trigger": {"id": "tick", "name": None},
                },
            }
            assert schedule.state("tick") == {
                "next_nominal": "2026-01-01T16:00:00.000Z",
                "next_fire_at": "2026-01-01T16:00:00.000Z",
                "last_slot": "2026-01-01T15:00:00.000Z",
            }

    asyncio.run(scenario())


def test_a_zero_catchup_window_never_catches_up(tmp_path: Path) -> None:
    clock = FakeClock(utc("2026-01-01T10:59:00Z"))

    async def scenario() -> list[str | None]:
        async with scheduler(tmp_path, clock, definitions("0 * * * *", window="0")) as (schedule, store):
            clock.current = utc("2026-01-01T11:00:01Z")
            schedule.wake()
            await until(lambda: _count(store, 1))
        clock.current = utc("2026-01-01T13:30:00Z")
        async with scheduler(tmp_path, clock, definitions("0 * * * *", window="0")) as (_, store):
            return [r.reason for r in await runs_of(store)]

    assert asyncio.run(scenario()) == [None, "missed", "missed"]


async def _count(store: Store, n: int) -> bool:
    return len(await runs_of(store)) >= n


def test_a_restart_inside_the_fall_back_fold_never_runs_a_slot_twice(tmp_path: Path, store_url: str) -> None:
    clock = FakeClock(utc("2026-11-01T05:29:00Z"))  # 01:29 EDT, before the first 01:30
    defs = definitions("30 1 * * *", zone="America/New_York")

    async def scenario() -> list[str | None]:
        async with scheduler(tmp_path, clock, defs, store_url) as (schedule, store):
            clock.current = utc("2026-11-01T05:30:01Z")  # the first 01:30
            schedule.wake()
            await until(lambda: _count(store, 1))
        for moment in ("2026-11-01T06:29:00Z", "2026-11-01T06:30:30Z", "2026-11-01T06:45:00Z"):  # the second 01:30
            clock.current = utc(moment)
            async with scheduler(tmp_path, clock, defs, store_url) as (schedule, store):
                assert schedule.state("tick")["next_nominal"] == "2026-11-02T06:30:00.000Z"  # type: ignore[index]
        async with scheduler(tmp_path, clock, defs, store_url) as (_, store):
            return [r.nominal_time for r in await runs_of(store)]

    assert asyncio.run(scenario()) == ["2026-11-01T05:30:00.000Z"]


def test_two_schedulers_on_one_store_claim_each_slot_once(tmp_path: Path, store_url: str) -> None:
    clock = FakeClock(utc("2026-01-01T10:59:00Z"))

    async def scenario() -> list[str | None]:
        async with scheduler(tmp_path, clock, definitions("0 * * * *"), store_url) as (one, store):
            two = Scheduler(one.dispatcher, store, clock)
            await two.start()
            clock.current = utc("2026-01-01T11:00:01Z")
            one.wake()
            two.wake()
            await until(lambda: _count(store, 1))
            await asyncio.sleep(0.3)  # give the second every chance to fire the same slot
            await two.stop()
            return [r.nominal_time for r in await runs_of(store)]

    assert asyncio.run(scenario()) == ["2026-01-01T11:00:00.000Z"]


def test_the_wall_clock_stepping_back_or_forward(tmp_path: Path) -> None:
    clock = FakeClock(utc("2026-01-01T10:59:00Z"))

    async def scenario() -> list[tuple[str | None, str | None]]:
        async with scheduler(tmp_path, clock, definitions("0 * * * *", window="1h")) as (schedule, store):
            clock.current = utc("2026-01-01T11:00:01Z")
            schedule.wake()
            await until(lambda: _count(store, 1))
            clock.current = utc("2026-01-01T10:30:00Z")  # back: nothing may run again
            schedule.wake()
            await asyncio.sleep(0.2)
            clock.current = utc("2026-01-01T11:00:30Z")
            schedule.wake()
            await asyncio.sleep(0.2)
            assert len(await runs_of(store)) == 1
            clock.current = utc("2026-01-01T14:30:00Z")  # forward past 12:00, 13:00 and 14:00
            schedule.wake()
            await until(lambda: _count(store, 4))
            return [(r.nominal_time, r.reason) for r in await runs_of(store)]

    assert asyncio.run(scenario()) == [
        ("2026-01-01T11:00:00.000Z", None),
        ("2026-01-01T12:00:00.000Z", "missed"),
        ("2026-01-01T13:00:00.000Z", "missed"),
        ("2026-01-01T14:00:00.000Z", None),
    ]


def test_a_slot_due_while_the_last_run_is_still_going_follows_the_overlap_rule(tmp_path: Path) -> None:
    clock = FakeClock(utc("2026-01-01T10:59:30Z"))
    defs = (
        "agent: {id: slow, type: command, command: [sleep, '30']}\n---\n"
        "trigger:\n  id: tick\n  type: schedule\n  schedule: {cron: '* * * * *'}\n  agent: {id: slow}\n"
        "  overlap: skip\n"
    )

    async def scenario() -> list[tuple[str | None, str, str | None]]:
        async with scheduler(tmp_path, clock, defs) as (schedule, store):
            for count, minute in ((1, "11:00:00.200"), (2, "11:01:00.200")):
                clock.current = utc(f"2026-01-01T{minute}Z")
                schedule.wake()
                await until(lambda n=count: _count(store, n))
            return [(r.nominal_time, str(r.status), r.reason) for r in await runs_of(store)]

    runs = asyncio.run(scenario())
    assert runs[1] == ("2026-01-01T11:01:00.000Z", "skipped", "overlap")
    assert runs[0][0] == "2026-01-01T11:00:00.000Z"
    assert runs[0][1] in ("pending", "running")


def test_a_burst_of_schedules_sharing_an_expression_walks_croniter_a_few_times_not_per_slot(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: 10,000 `* * * * *` slots due at once took 3-4 s, most of it croniter asked the same
    question (the slots after 10:59, the next after 11:00) once or twice for every schedule."""
    count = 500
    docs = ['agent: {id: noop, type: command, command: ["sleep", "600"], max_concurrent: 1}']
    docs += [
        f"trigger: {{id: b{i:04d}, type: schedule, schedule: {{cron: '* * * * *'}}, agent: {{id: noop}}}}"
        for i in range(count)
    ]
    clock = FakeClock(utc("2027-03-04T10:59:30Z"))
    walks = 0
    real_get_next = croniter.get_next

    def counted(self: croniter, *args: Any, **kwargs: Any) -> Any:
        nonlocal walks
        walks += 1
        return real_get_next(self, *args, **kwargs)

    async def scenario() -> int:
        nonlocal walks
        async with scheduler(tmp_path, clock, "\n---\n".join(docs) + "\n", store_url) as (schedule, store):
            monkeypatch.setattr(croniter, "get_next", counted)
            walks = 0
            clock.current = utc("2027-03-04T11:00:00.200Z")
            schedule.wake()

            async def stored() -> bool:
                return len(await store.list_runs(limit=1000)) >= count

            await until(stored)
            return walks

    assert asyncio.run(scenario()) < 20  # was at least 4 a slot: 2,000
