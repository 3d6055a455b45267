"""The store's claims and leases (SPEC 10): claim, renew, takeover and cancel requests, on both stores (a
real SQLite file, a real PostgreSQL database), with every instant passed as an argument (the clock is the test's)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from triggerd.agents.process_group import identify_self
from triggerd.config.models import StoreSettings
from triggerd.dispatch.instances import default_instance, is_dead
from triggerd.runs import ProcessGroup, Run, RunStatus, Source
from triggerd.store import open_store
from triggerd.store.abc import Instance, Loaded, Store

T = TypeVar("T")
SEQUENCE = itertools.count()
LOADED = Loaded({"t": (2, 2), "u": (5, 1)}, {"a": None, "b": 1})


def at(second: int) -> str:
    return f"2026-01-01T00:00:{second:02d}.000Z"


def new_run(trigger: str = "t", agent: str = "a", created: int = 0) -> Run:
    return Run(
        id=f"run{next(SEQUENCE):06d}",  # ids sort by creation, as new_run_id's do across milliseconds
        trigger_id=trigger,
        agent_id=agent,
        status=RunStatus.PENDING,
        input={},
        source=Source.MANUAL,
        created_at=at(created),
    )


def with_store(store_url: str, scenario: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(StoreSettings(store_url))
        await store.open()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_claims_take_the_oldest_due_runs_within_trigger_and_agent_limits_over_every_instance(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        t_runs = [new_run("t") for _ in range(4)]
        u_runs = [new_run("u", "b") for _ in range(2)]
        unknown = new_run("not-loaded")
        for run in [*t_runs, *u_runs, unknown]:
            await store.create_run(run)
        a = await store.claim_runs("A", at(1), at(31), 1, LOADED)
        assert [r.id for r in a.runs] == [t_runs[0].id]  # the limit this daemon passed: oldest first
        assert a.runs[0].status is RunStatus.RUNNING
        assert [(x.number, x.status, x.started_at) for x in a.runs[0].attempts] == [(1, RunStatus.RUNNING, at(1))]
        b = await store.claim_runs("B", at(2), at(32), 10, LOADED, count_pending=True)
        # trigger t allows 2 running (one is A's), agent b allows 1; nobody loads "not-loaded"
        assert sorted(r.id for r in b.runs) == sorted([t_runs[1].id, u_runs[0].id])
        assert b.pending == 4
        assert (await store.claim_runs("C", at(3), at(33), 10, LOADED)).runs == []
        load = (await store.trigger_loads(["t"]))["t"]
        assert (load.running, load.pending, load.oldest_running) == (2, 2, t_runs[0].id)

    with_store(store_url, scenario)


def test_renewal_keeps_a_lease_and_an_expired_one_is_taken_over_as_an_interrupted_attempt(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        run = new_run("t")
        await store.create_run(run)
        await store.register_instance(Instance("A", "127.0.0.1:1", at(0), "f", at(0)))
        await store.claim_runs("A", at(1), at(11), 10, LOADED)
        assert (await store.renew_leases("A", [run.id], at(9), at(19))).held == {run.id}
        assert (await store.renew_leases("B", [run.id], at(9), at(19))).held == set()  # not B's to renew
        assert (await store.claim_runs("B", at(18), at(28), 10, LOADED)).runs == []  # renewed: still A's
        taken = await store.claim_runs("B", at(19), at(29), 10, LOADED)
        assert [(i.run_id, i.number, i.retried) for i in taken.interrupted] == [(run.id, 1, True)]
        assert [r.id for r in taken.runs] == [run.id]  # retried at once, here
        attempts = [(x.number, x.status, x.error) for x in taken.runs[0].attempts]
        assert attempts == [(1, RunStatus.FAILED, "interrupted"), (2, RunStatus.RUNNING, None)]
        # A comes back too late: its outcome is refused, its lease is gone
        late = await store.end_attempt(
            run.id, 1, status=RunStatus.COMPLETED, error=None, at=at(20), then=RunStatus.COMPLETED
        )
        assert late is False
        assert (await store.renew_leases("A", [run.id], at(20), at(30))).held == set()
        [a] = [i for i in await store.instances() if i.id == "A"]
        assert a.last_seen == at(20)  # a renewal is a heartbeat, even with nothing held
        # the second attempt is interrupted too: with max_attempts 2 it is a dead letter
        final = await store.claim_runs("C", at(29), at(39), 10, LOADED)
        assert [(i.number, i.retried) for i in final.interrupted] == [(2, False)]
        stored = await store.get_run(run.id)
        assert stored is not None
        assert (stored.status, stored.error, stored.dead_letter) == (RunStatus.FAILED, "interrupted", True)

    with_store(store_url, scenario)


def test_a_dead_instances_claims_expire_at_once_and_its_process_is_reported(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        run = new_run("t")
        await store.create_run(run)
        await store.claim_runs("A", at(1), at(31), 10, LOADED)
        group = ProcessGroup(4242, 7, "boot")
        await store.record_process(run.id, 1, group)
        assert (await store.claim_runs("B", at(2), at(32), 10, LOADED)).interrupted == []
        assert await store.expire_claims(["A"], at(2)) == 1
        taken = await store.claim_runs("B", at(2), at(32), 10, LOADED)
        assert [(i.run_id, i.process) for i in taken.interrupted] == [(run.id, group)]

    with_store(store_url, scenario)


def test_cancel_requests_cancel_a_pending_run_and_flag_a_running_one_for_its_holder(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        running, pending = new_run("t"), new_run("u", "b")
        await store.create_run(running)
        await store.claim_runs("A", at(1), at(31), 1, LOADED)
        await store.create_run(pending)
        assert await store.request_cancel(pending.id, "requested", at(2)) is RunStatus.PENDING
        cancelled = await store.get_run(pending.id)
        assert cancelled is not None
        assert (cancelled.status, cancelled.reason) == (RunStatus.CANCELLED, "requested")
        assert await store.request_cancel(running.id, "replaced", at(3)) is RunStatus.RUNNING
        renewal = await store.renew_leases("A", [running.id], at(4), at(34))
        assert dict(renewal.cancel) == {running.id: "replaced"}
        assert await store.request_cancel(pending.id, "requested", at(5)) is RunStatus.CANCELLED  # left alone
        assert await store.request_cancel("no-such-run", "requested", at(5)) is None
        # its holder dies before its next renewal: whoever takes it over ends it cancelled, not retried
        taken = await store.claim_runs("B", at(40), at(70), 0, LOADED)
        assert [(i.run_id, i.retried) for i in taken.interrupted] == [(running.id, False)]
        ended = await store.get_run(running.id)
        assert ended is not None
        assert (ended.status, ended.reason) == (RunStatus.CANCELLED, "replaced")
        assert ended.attempts[-1].error == "interrupted"
        assert ((await store.trigger_loads(["u"]))["u"]).pending == 0
        await store.create_run(new_run("u", "b"))
        assert await store.prune(at(39), at(59)) == 1  # the cancelled pending run; the pending one stays counted
        loads = await store.trigger_loads(["u", "t", "u"])
        assert (loads["u"].pending, loads["t"].running, sorted(loads)) == (1, 0, ["t", "u"])

    with_store(store_url, scenario)


def test_a_retry_is_claimed_only_when_due_and_its_due_time_is_reported(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        run = new_run("t")
        await store.create_run(run)
        await store.claim_runs("A", at(1), at(31), 10, LOADED)
        ended = await store.end_attempt(
            run.id, 1, status=RunStatus.FAILED, error="boom", at=at(2), then=RunStatus.PENDING, next_attempt_at=at(7)
        )
        assert ended is True
        early = await store.claim_runs("B", at(3), at(33), 10, LOADED)
        assert (early.runs, early.next_due) == ([], at(7))
        due = await store.claim_runs("B", at(7), at(37), 10, LOADED)
        assert [[x.number for x in r.attempts] for r in due.runs] == [[1, 2]]
        assert ((await store.trigger_loads(["t"]))["t"]).running == 1
        await store.end_attempt(run.id, 2, status=RunStatus.COMPLETED, error=None, at=at(8), then=RunStatus.COMPLETED)
        load = (await store.trigger_loads(["t"]))["t"]  # kept by the store's triggers through every change of status
        assert (load.running, load.pending, load.oldest_running) == (0, 0, None)

    with_store(store_url, scenario)


def test_a_run_behind_a_long_queue_of_a_trigger_at_its_limit_is_still_claimed(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        await asyncio.gather(*(store.create_run(new_run("t")) for _ in range(2)))
        assert len((await store.claim_runs("A", at(1), at(31), 10, LOADED)).runs) == 2  # t is at its limit
        await asyncio.gather(*(store.create_run(new_run("t")) for _ in range(3000)))
        behind = new_run("u", "b")
        await store.create_run(behind)
        claims = await store.claim_runs("B", at(2), at(32), 10, LOADED, count_pending=True)
        assert [r.id for r in claims.runs] == [behind.id]
        assert claims.pending == 3000

    with_store(store_url, scenario)


def test_loads_stay_exact_across_reopened_stores_and_a_prune(store_url: str) -> None:
    # PostgreSQL keeps the counts per writer connection: a reopened store writes through another one,
    # and prune folds the rows of connections that are gone.
    async def twice(store: Store) -> None:
        await asyncio.gather(*(store.create_run(new_run("t")) for _ in range(5)))
        await store.claim_runs("A", at(1), at(31), 1, LOADED)

    with_store(store_url, twice)
    with_store(store_url, twice)

    async def pruned(store: Store) -> tuple[int, int, int | None]:
        await store.prune(at(0), at(0))
        load = (await store.trigger_loads(["t"]))["t"]
        claims = await store.claim_runs("B", at(2), at(32), 0, LOADED, count_pending=True)
        return load.running, load.pending, claims.pending

    assert with_store(store_url, pruned) == (2, 8, 8)


def test_the_dead_are_a_previous_life_a_gone_process_here_and_this_hosts_default_names_from_a_past_boot() -> None:
    me = identify_self()
    assert me is not None
    gone = ProcessGroup(me.pgid, me.start_ticks + 1, me.boot_id)  # this pid, but started at another time
    past_boot = ProcessGroup(me.pgid, me.start_ticks, "another-boot")
    host = default_instance().rsplit(":", 1)[0]

    def instance(name: str, process: ProcessGroup | None) -> Instance:
        return Instance(name, "127.0.0.1:1", at(0), "f", at(0), process)

    assert is_dead(instance("me", None), "me")
    assert not is_dead(instance("alive", me), "me")
    assert is_dead(instance("gone", gone), "me")
    assert is_dead(instance(f"{host}:4242", past_boot), "me")
    assert not is_dead(instance("elsewhere:4242", past_boot), "me")  # another machine: its lease tells
    assert not is_dead(instance("named", None), "me")
