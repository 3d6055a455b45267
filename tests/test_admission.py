"""Overlap admission's reuse of a known load (dispatch/admission.py) against a real SQLite store:
it may count more runs in flight than the store holds, never fewer (issue 17 review)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.test_store import new_run
from triggerd.clock import SystemClock
from triggerd.config.models import Overlap
from triggerd.dispatch.admission import Admission
from triggerd.runs import RunStatus
from triggerd.store.sqlite import SqliteStore

TRIGGER: Any = SimpleNamespace(id="t", max_concurrent=2, max_queued=1, overlap=Overlap.QUEUE, debounce=None)


async def set_status(store: SqliteStore, run_id: str, status: str) -> None:
    await store._write(lambda c: c.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id)))


async def with_runs(tmp_path: Path, statuses: list[str]) -> tuple[SqliteStore, Admission, list[str]]:
    """An open store holding a run of TRIGGER in each status, an Admission on it, and the runs' ids."""
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    ids = []
    for status in statuses:
        run = new_run(trigger=TRIGGER.id)
        await store.create_run(run)
        if status != "pending":
            await set_status(store, run.id, status)
        ids.append(run.id)
    return store, Admission(store, SystemClock()), ids


async def fire(admission: Admission, store: SqliteStore) -> str:
    """One firing as the dispatcher makes it: reserve, decide, store it if pending, release."""
    admission.reserve(TRIGGER.id)
    decision = await admission.decide(TRIGGER)
    pending = decision.status is RunStatus.PENDING
    if pending:
        await store.create_run(new_run(trigger=TRIGGER.id))
    admission.release(TRIGGER.id, pending)
    return str(decision.status)


def test_a_load_read_while_a_run_ends_does_not_take_it_off_twice(tmp_path: Path) -> None:
    """A run ends here; before the dispatcher is told, a firing reads a load that no longer holds
    it. Taking it off again would admit a firing past max_concurrent + max_queued."""

    async def scenario() -> list[str]:
        # 2 running, 1 pending: the limit of 3 is reached
        store, admission, runs = await with_runs(tmp_path, ["running", "running", "pending"])
        number = admission.ending(TRIGGER.id)  # runs[0] records its end...
        await set_status(store, runs[0], "completed")  # ...committed: 1 running, 1 pending
        first = await fire(admission, store)  # reads 2 in flight: admitted (now 3)
        admission.ended(TRIGGER.id, number, final=True)  # told late: must not take runs[0] off again
        second = await fire(admission, store)  # 3 in flight: queue full
        await store.close()
        return [first, second]

    assert asyncio.run(scenario()) == ["pending", "skipped"]


def test_a_run_ended_after_the_load_was_read_is_taken_off_without_a_read(tmp_path: Path) -> None:
    """The known load follows runs that end here: the firing after an end is admitted on it."""

    async def scenario() -> tuple[list[str], int]:
        store, admission, runs = await with_runs(tmp_path, ["running", "running"])
        first = await fire(admission, store)  # reads 2 running: admitted, 3 in flight
        number = admission.ending(TRIGGER.id)
        await set_status(store, runs[0], "completed")
        admission.ended(TRIGGER.id, number, final=True)
        reads = 0
        loads = store.trigger_loads

        async def counted(ids: Any) -> Any:
            nonlocal reads
            reads += 1
            return await loads(ids)

        store.trigger_loads = counted  # type: ignore[method-assign]
        second = await fire(admission, store)  # 2 in flight by the known load: admitted, no read
        third = await fire(admission, store)  # 3 in flight: at the limit, read afresh: full
        await store.close()
        return [first, second, third], reads

    decisions, reads = asyncio.run(scenario())
    assert decisions == ["pending", "pending", "skipped"]
    assert reads == 1  # only for the decision at the limit
