"""The store contract's flow control (SPEC 12; store/abc.py), on both stores with every instant an
argument: a claim's concurrency groups and throttle windows, a debounce's supersede, pauses,
spend and a group's state."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.test_claims import at, new_run, with_store
from triggerd.config.models import StoreSettings
from triggerd.runs import FlowKeys, Run, RunStatus
from triggerd.store import open_store
from triggerd.store.abc import FlowLimits, Loaded, Store

KEYED = Loaded({"t": (1, 1)}, {"a": None}, {"t": FlowLimits(keyed=True, throttle=None)})
THROTTLED = Loaded({"t": (10, 1)}, {"a": None}, {"t": FlowLimits(keyed=False, throttle=(2, 60.0))})


def test_a_keyed_trigger_holds_max_concurrent_per_group_across_claims(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        one, two, one_again, missing = (
            replace(new_run(), keys=FlowKeys(concurrency=key)) for key in ("1", "2", "1", "null")
        )
        for run in (one, two, one_again, missing):
            await store.create_run(run)
        first = await store.claim_runs("A", at(1), at(31), 10, KEYED)
        assert [r.id for r in first.runs] == [one.id, two.id, missing.id]  # a missing value is its own group
        assert (await store.claim_runs("B", at(2), at(32), 10, KEYED)).runs == []  # group 1 is full
        load = await store.key_load("t", "1")
        assert (load.running, load.pending, load.oldest_running) == (1, 1, one.id)
        await store.end_attempt(one.id, 1, status=RunStatus.COMPLETED, error=None, at=at(3), then=RunStatus.COMPLETED)
        assert [r.id for r in (await store.claim_runs("B", at(4), at(34), 10, KEYED)).runs] == [one_again.id]

    with_store(store_url, scenario)


def test_a_throttle_starts_limit_runs_per_window_and_marks_the_rest_due_when_it_frees(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        runs = [replace(new_run(), keys=FlowKeys(throttle='"r"')) for _ in range(3)]
        for run in runs:
            await store.create_run(run)
        first = await store.claim_runs("A", at(1), at(31), 10, THROTTLED)
        assert [r.id for r in first.runs] == [runs[0].id, runs[1].id]
        waiting = await store.get_run(runs[2].id)
        assert waiting is not None and (waiting.status, waiting.reason) == (RunStatus.PENDING, "throttled")
        assert waiting.next_attempt_at == "2026-01-01T00:01:01.000Z" and first.next_due == waiting.next_attempt_at
        assert (await store.claim_runs("B", at(59), at(89), 10, THROTTLED)).runs == []
        later = await store.claim_runs("B", "2026-01-01T00:01:01.000Z", "2026-01-01T00:01:31.000Z", 10, THROTTLED)
        assert [(r.id, r.reason) for r in later.runs] == [(runs[2].id, None)]
        state = await store.group_state("t", "throttle", '"r"', at(0))
        # the first two were taken over meanwhile (their leases, to at(31), ended): one runs, three started
        assert (state.running, state.pending, len(state.started)) == (1, 0, 3)

    with_store(store_url, scenario)


def test_a_debounced_run_supersedes_the_pending_runs_of_its_burst_only(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        def debounced(key: str, created: int) -> Run:
            run = new_run(created=created)
            return replace(run, reason="debounced", next_attempt_at=at(created + 30), keys=FlowKeys(debounce=key))

        first, other, last = debounced('"a"', 1), debounced('"b"', 2), debounced('"a"', 3)
        assert (await store.create_run(first)).superseded == 0
        assert (await store.create_run(other)).superseded == 0
        assert (await store.create_run(last, now=at(3))).superseded == 1
        ended = await store.get_run(first.id)
        assert ended is not None and (ended.status, ended.reason, ended.finished_at) == (
            RunStatus.SKIPPED,
            "debounced",
            at(3),
        )
        state = await store.group_state("t", "debounce", '"a"', at(0))
        assert (state.pending, state.next_due) == (1, at(33))
        assert (await store.claim_runs("A", at(10), at(40), 10, KEYED)).runs == []  # not due before the period
        due = await store.claim_runs("A", at(33), at(63), 10, Loaded({"t": (5, 1)}, {"a": None}))
        assert sorted(r.id for r in due.runs) == sorted([last.id, other.id])

    with_store(store_url, scenario)


def test_a_burst_created_at_once_from_two_connections_leaves_one_pending_run(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        second = open_store(StoreSettings(store_url))
        await second.open()
        try:
            runs = [
                replace(new_run(), reason="debounced", next_attempt_at=at(30), keys=FlowKeys(debounce='""'))
                for _ in range(20)
            ]
            await asyncio.gather(*((store, second)[i % 2].create_run(run) for i, run in enumerate(runs)))
            pending = await store.list_runs(trigger_id="t", status=RunStatus.PENDING)
            skipped = await store.list_runs(trigger_id="t", status=RunStatus.SKIPPED)
            assert (len(pending), len(skipped)) == (1, 19)
        finally:
            await second.close()

    with_store(store_url, scenario)


def test_pauses_are_stored_and_spend_counts_usage_over_the_day_and_runs_over_the_hour(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        await store.pause_trigger("t", at(1))
        await store.pause_trigger("t", at(2))  # pausing again keeps the first time
        assert await store.paused_triggers() == {"t": at(1)}
        assert await store.resume_trigger("t") is True
        assert await store.resume_trigger("t") is False
        assert await store.paused_triggers() == {}
        old = replace(new_run(created=0), usage={"input_tokens": 1000, "output_tokens": 1})
        done = replace(new_run(created=10), usage={"input_tokens": 30, "output_tokens": 12, "cache_read_tokens": 9})
        skipped = replace(new_run(created=20), status=RunStatus.SKIPPED, reason="budget", finished_at=at(20))
        other_agent = replace(new_run(agent="b", created=20), usage={"input_tokens": 5, "output_tokens": 5})
        for run in (old, done, skipped, other_agent):
            await store.create_run(run)
        spent = await store.spend(trigger_id="t", day_since=at(5), hour_since=at(15))
        assert (spent.tokens, spent.runs) == (52, 1)  # the skipped run is no run spent
        by_agent = await store.spend(agent_id="b", day_since=at(5), hour_since=at(15))
        assert (by_agent.tokens, by_agent.runs) == (10, 1)

    with_store(store_url, scenario)
