"""The store contract, run against both stores: durability before acknowledgement, group commit, dedupe,
pruning, migrations. SQLite-only checks (its files, its older schemas) are marked as such by name.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from triggerd.config.models import StoreSettings
from triggerd.errors import StoreError
from triggerd.runs import ProcessGroup, Run, RunStatus, Source, new_run_id
from triggerd.store import open_store
from triggerd.store.abc import Created, DeadMessage
from triggerd.store.migrations import MIGRATIONS
from triggerd.store.sqlite import SqliteStore


def make_store(url: str) -> Any:
    """The store a URL names; Any, so that tests may read an implementation's counters (commits)."""
    return open_store(StoreSettings(url))


def new_run(trigger: str = "t", key: str | None = None, created: str = "2026-01-01T00:00:00.000Z") -> Run:
    return Run(
        id=new_run_id(),
        trigger_id=trigger,
        agent_id="a",
        status=RunStatus.PENDING,
        input={"n": 1},
        source=Source.MANUAL,
        created_at=created,
        idempotency_key=key,
    )


def test_concurrent_writes_share_commits_and_all_survive_a_reopen(store_url: str) -> None:
    async def scenario() -> tuple[int, int, int]:
        store = make_store(store_url)
        await store.open()
        created = await asyncio.gather(*(store.create_run(new_run()) for _ in range(300)))
        commits = store.commits
        await store.close()
        again = make_store(store_url)
        await again.open()
        count = len(await again.list_runs(limit=1000))
        await again.close()
        return len({c.run_id for c in created}), commits, count

    distinct, commits, count = asyncio.run(scenario())
    assert distinct == count == 300
    assert commits < 300  # batched: many firings per commit


def test_dedupe_key_within_the_window_names_the_first_run(store_url: str) -> None:
    async def scenario() -> list[tuple[str, bool]]:
        store = make_store(store_url)
        await store.open()
        first = await store.create_run(new_run(key="k1"), 60, "2026-01-01T00:00:00.000Z")
        again = await store.create_run(new_run(key="k1"), 60, "2026-01-01T00:00:59.000Z")
        other_trigger = await store.create_run(new_run(trigger="u", key="k1"), 60, "2026-01-01T00:00:30.000Z")
        expired = await store.create_run(new_run(key="k1"), 60, "2026-01-01T00:01:00.001Z")
        await store.close()
        return [(c.run_id == first.run_id, c.duplicate) for c in (first, again, other_trigger, expired)]

    assert asyncio.run(scenario()) == [(True, False), (True, True), (False, False), (False, False)]


def test_create_runs_writes_a_batch_in_one_commit_and_a_slot_named_twice_makes_one_run(store_url: str) -> None:
    """The scheduler's burst path (issue 17): many runs in one write, each slot still claimed once."""

    def slot(trigger: str, nominal: str) -> Run:
        return replace(new_run(trigger), source=Source.SCHEDULE, nominal_time=nominal)

    async def scenario() -> tuple[list[Created], list[str], Created]:
        store = make_store(store_url)
        await store.open()
        runs = [slot(f"s{i}", "2026-01-01T00:01:00.000Z") for i in range(300)]
        twice = slot("s0", "2026-01-01T00:01:00.000Z")
        created = await store.create_runs([(r, 0.0) for r in [*runs, twice]], "2026-01-01T00:01:00.100Z")
        again = await store.create_run(slot("s1", "2026-01-01T00:01:00.000Z"), 0.0, "2026-01-01T00:01:01.000Z")
        stored = [r.id for r in await store.list_runs(limit=1000)]
        await store.close()
        return created, stored, again

    created, stored, again = asyncio.run(scenario())
    assert [c.duplicate for c in created] == [False] * 300 + [True]
    assert created[-1].run_id == created[0].run_id
    assert sorted(stored) == sorted(c.run_id for c in created[:300])
    assert again.duplicate and again.run_id == created[1].run_id


def test_prune_removes_old_finished_runs_but_keeps_dead_letters_and_unfinished(store_url: str) -> None:
    async def scenario() -> set[str]:
        store = make_store(store_url)
        await store.open()
        old_done, dead, pending, recent = (new_run() for _ in range(4))
        for run in (old_done, dead, pending, recent):
            await store.create_run(run)
        for run, at, dead_letter in (
            (old_done, "2026-01-01T00:00:01.000Z", False),
            (dead, "2026-01-01T00:00:01.000Z", True),
            (recent, "2026-03-01T00:00:00.000Z", False),
        ):
            await store.start_attempt(run.id, 1, at)
            await store.end_attempt(
                run.id,
                1,
                status=RunStatus.FAILED if dead_letter else RunStatus.COMPLETED,
                error=None,
                at=at,
                then=RunStatus.FAILED if dead_letter else RunStatus.COMPLETED,
                dead_letter=dead_letter,
            )
        assert await store.prune("2026-02-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z") == 1
        left = {r.id for r in await store.list_runs(limit=10)}
        await store.close()
        return {
            name
            for name, run in (("old", old_done), ("dead", dead), ("pending", pending), ("recent", recent))
            if run.id in left
        }

    assert asyncio.run(scenario()) == {"dead", "pending", "recent"}


def test_attempts_and_outcomes_are_recorded(store_url: str) -> None:
    async def scenario() -> Run | None:
        store = make_store(store_url)
        await store.open()
        run = new_run()
        await store.create_run(run)
        await store.start_attempt(run.id, 1, "2026-01-01T00:00:01.000Z")
        await store.end_attempt(
            run.id,
            1,
            status=RunStatus.FAILED,
            error="boom",
            at="2026-01-01T00:00:02.000Z",
            then=RunStatus.PENDING,
            next_attempt_at="2026-01-01T00:00:05.000Z",
        )
        await store.start_attempt(run.id, 2, "2026-01-01T00:00:05.000Z")
        await store.end_attempt(
            run.id,
            2,
            status=RunStatus.COMPLETED,
            error=None,
            at="2026-01-01T00:00:06.000Z",
            then=RunStatus.COMPLETED,
            output={"ok": True},
            usage={"output_tokens": 3},
        )
        stored = await store.get_run(run.id)
        await store.close()
        return stored

    run = asyncio.run(scenario())
    assert run is not None
    assert (run.status, run.output, run.usage, run.failures) == (
        RunStatus.COMPLETED,
        {"ok": True},
        {"output_tokens": 3},
        1,
    )
    assert [(a.number, a.status, a.error) for a in run.attempts] == [
        (1, RunStatus.FAILED, "boom"),
        (2, RunStatus.COMPLETED, None),
    ]
    assert (run.started_at, run.finished_at) == ("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:06.000Z")


def test_sqlite_an_older_database_gains_the_process_group_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:4], start=1):  # a database written before SPEC 5.2's record
        for statement in script:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    old = new_run()
    conn.execute(
        "INSERT INTO runs (id, trigger_id, agent_id, status, input, source, created_at) "
        "VALUES (?, 't', 'a', 'running', '{}', 'manual', ?)",
        (old.id, old.created_at),
    )
    conn.execute(
        "INSERT INTO attempts (run_id, number, started_at, status) VALUES (?, 1, ?, 'running')",
        (old.id, old.created_at),
    )
    conn.close()
    group = ProcessGroup(pgid=4242, start_ticks=123456789, boot_id="9f1c2d3e-boot")

    async def scenario() -> tuple[Run | None, Run | None]:
        store = SqliteStore(path)
        await store.open()
        run = new_run()
        await store.create_run(run)
        await store.start_attempt(run.id, 1, "2026-01-01T00:00:01.000Z")
        await store.record_process(run.id, 1, group)
        await store.end_attempt(
            run.id, 1, status=RunStatus.FAILED, error="x", at="2026-01-01T00:00:02.000Z", then=RunStatus.PENDING
        )
        await store.start_attempt(run.id, 2, "2026-01-01T00:00:03.000Z")
        await store.close()
        store = SqliteStore(path)  # what a restart reads
        await store.open()
        runs = await store.get_run(old.id), await store.get_run(run.id)
        await store.close()
        return runs

    migrated, recorded = asyncio.run(scenario())
    assert migrated is not None and [a.process for a in migrated.attempts] == [None]
    assert recorded is not None and [a.process for a in recorded.attempts] == [group, None]
    assert "process" not in recorded.attempts[0].to_json()  # the API form is SPEC 5.2's keys only


def test_a_database_from_a_newer_triggerd_is_refused(store_url: str) -> None:
    async def scenario() -> None:
        store = make_store(store_url)
        await store.open()
        # what a newer triggerd leaves behind: a schema version past the last migration known here
        if store_url.startswith("sqlite"):
            await store._write(lambda c: c.execute("PRAGMA user_version = 99"))
        else:
            await store._write(lambda c: c.execute("UPDATE triggerd_schema SET version = 99"))
        await store.close()
        await make_store(store_url).open()

    with pytest.raises(StoreError, match="newer than this triggerd knows"):
        asyncio.run(scenario())


def test_sqlite_an_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    async def scenario() -> None:
        await SqliteStore(tmp_path / "file" / "s.db").open()

    with pytest.raises(StoreError, match="cannot open store"):
        asyncio.run(scenario())


def test_schedule_slots_are_claimed_once_and_pruning_keeps_the_latest(store_url: str) -> None:
    def slot_run(nominal: str) -> Run:
        return Run(
            id=new_run_id(),
            trigger_id="s",
            agent_id="a",
            status=RunStatus.PENDING,
            input={},
            source=Source.SCHEDULE,
            created_at=nominal,
            nominal_time=nominal,
        )

    async def scenario() -> tuple[list[bool], dict[str, str], dict[str, str]]:
        store = make_store(store_url)
        await store.open()
        claims = [
            (await store.create_run(slot_run(n))).duplicate
            for n in ("2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z", "2026-01-01T00:00:00.000Z")
        ]
        before = await store.last_slots()
        await store.prune("2027-01-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z")
        after = await store.last_slots()
        again = await store.create_run(slot_run("2026-01-01T01:00:00.000Z"))
        await store.close()
        return [*claims, again.duplicate], before, after

    claims, before, after = asyncio.run(scenario())
    assert claims == [False, False, True, True]
    assert before == after == {"s": "2026-01-01T01:00:00.000Z"}


def test_one_batch_dedupes_keys_and_slots_within_itself_and_fails_only_the_bad_run(store_url: str) -> None:
    def slot_run(nominal: str) -> Run:
        return replace(new_run(trigger="s"), source=Source.SCHEDULE, nominal_time=nominal)

    async def scenario() -> tuple[list[tuple[bool, bool]], list[str], int, int]:
        store = make_store(store_url)
        await store.open()
        taken = new_run()
        await store.create_run(taken)
        runs = [
            new_run(key="k"),
            new_run(key="k"),  # the same key as the run before it, in the same batch
            slot_run("2026-01-01T00:00:00.000Z"),
            slot_run("2026-01-01T00:00:00.000Z"),  # the same slot, in the same batch
            replace(new_run(), id=taken.id),  # an id already stored: this one fails, alone
            new_run(key="other"),
        ]
        # Hold the writer inside one write while the runs queue up, so that they form one batch
        # whatever the scheduling (under load the writer could wake between two of them).
        entered, gate = threading.Event(), threading.Event()
        if isinstance(store, SqliteStore):

            def hold(_: Any) -> None:  # on the writer thread
                entered.set()
                gate.wait(10)

        else:

            async def hold(_: Any) -> None:  # on the writer task
                entered.set()
                await asyncio.to_thread(gate.wait, 10)

        held = asyncio.ensure_future(store._write(hold))
        assert await asyncio.to_thread(entered.wait, 10)
        queued = [asyncio.ensure_future(store.create_run(run, 60)) for run in runs]
        await asyncio.sleep(0.05)  # every create_run has put its write on the queue
        gate.set()
        await held
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        commits = store.commits - 1  # the held write's own commit
        stored = len(await store.list_runs(limit=100))
        await store.close()
        shapes = [(o.run_id == runs[i].id, o.duplicate) for i, o in enumerate(outcomes) if isinstance(o, Created)]
        errors = [str(o) for o in outcomes if isinstance(o, BaseException)]
        return shapes, errors, commits, stored

    shapes, errors, commits, stored = asyncio.run(scenario())
    assert shapes == [(True, False), (False, True), (True, False), (False, True), (True, False)]
    assert len(errors) == 1
    assert errors[0].startswith(
        "store write failed: UNIQUE constraint failed: runs.id"
        if store_url.startswith("sqlite")
        else 'store write failed: duplicate key value violates unique constraint "runs_pkey"'
    )
    assert commits == 2  # the first run, then the whole batch in one commit
    assert stored == 4  # taken, the run with k, the slot, the run with "other"; nothing of the failed one


def test_sqlite_a_write_failing_in_a_batch_is_undone_alone(tmp_path: Path) -> None:
    """A SQLite batch runs without savepoints first (issue 17); when one of its writes fails, the
    batch runs again with a savepoint each: the failing write leaves nothing, the others commit."""

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes (n) VALUES (7)")
        raise ValueError("a write that fails after writing")

    def good(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes (n) VALUES (8)")

    async def scenario() -> tuple[list[Any], list[Any], int, int]:
        store = SqliteStore(tmp_path / "state.db")
        await store.open()
        await store._write(lambda c: c.execute("CREATE TABLE notes (n INTEGER)"))
        before = store.commits
        entered, gate = threading.Event(), threading.Event()

        def hold(_: Any) -> None:  # on the writer thread, while the batch queues up
            entered.set()
            gate.wait(10)

        held = asyncio.ensure_future(store._write(hold))
        assert await asyncio.to_thread(entered.wait, 10)
        run = new_run()
        queued = [
            asyncio.ensure_future(store._write(half_then_fail)),
            asyncio.ensure_future(store.create_run(run)),
            asyncio.ensure_future(store._write(good)),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await held
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        commits = store.commits - before - 1  # the held write's own commit
        stored = await store._read(lambda c: c.execute("SELECT n FROM notes").fetchall())
        runs = len(await store.list_runs(limit=10))
        await store.close()
        return outcomes, stored, commits, runs

    outcomes, stored, commits, runs = asyncio.run(scenario())
    assert isinstance(outcomes[0], StoreError)
    assert str(outcomes[0]) == "store write failed: a write that fails after writing"
    assert isinstance(outcomes[1], Created)
    assert outcomes[2] is None
    assert stored == [(8,)]  # nothing of the failed write
    assert (commits, runs) == (1, 1)


def test_listing_paging_dead_letters_unfinished_runs_and_stats(store_url: str) -> None:
    runs = [new_run(trigger="t" if i % 2 else "u", created=f"2026-01-01T00:00:0{i}.000Z") for i in range(6)]
    runs = [replace(run, id=f"01{i}{run.id[3:]}") for i, run in enumerate(runs)]  # ids in creation order

    async def scenario() -> dict[str, Any]:
        store = make_store(store_url)
        await store.open()
        for run in runs:
            await store.create_run(run)
        done, dead, cancelled, requeued, running = runs[0], runs[1], runs[2], runs[3], runs[4]
        for run in (done, dead, running):
            await store.start_attempt(run.id, 1, "2026-01-01T00:01:00.000Z")
        await store.end_attempt(
            done.id, 1, status=RunStatus.COMPLETED, error=None, at="2026-01-01T00:02:00.000Z", then=RunStatus.COMPLETED
        )
        await store.end_attempt(
            dead.id, 1, status=RunStatus.FAILED, error="no", at="2026-01-01T00:02:00.000Z", then=RunStatus.FAILED,
            dead_letter=True,
        )  # fmt: skip
        await store.finish_run(cancelled.id, RunStatus.CANCELLED, at="2026-01-01T00:02:00.000Z", reason="shutdown")
        await store.finish_run(requeued.id, RunStatus.CANCELLED, at="2026-01-01T00:02:00.000Z", reason="shutdown")
        await store.requeue(requeued.id, at="2026-01-01T00:03:00.000Z")
        again = await store.get_run(requeued.id)
        stats = await store.trigger_stats()
        found = {
            "newest two": [r.id for r in await store.list_runs(limit=2)],
            "before an id": [r.id for r in await store.list_runs(before=runs[3].id)],
            "before an instant": [r.id for r in await store.list_runs(before="2026-01-01T00:00:02.000Z")],
            "of u, cancelled": [r.id for r in await store.list_runs(trigger_id="u", status=RunStatus.CANCELLED)],
            "dead letters": [r.id for r in await store.dead_letters()],
            "unfinished": [r.id for r in await store.unfinished_runs()],
            "requeued": (again.status, again.reason, again.finished_at, again.next_attempt_at) if again else None,
            "stats": {t: (dict(s.runs), s.last_run.id if s.last_run else None) for t, s in stats.items()},
            "missing": await store.get_run("nope"),
        }
        await store.close()
        return found

    ids = [run.id for run in runs]
    assert asyncio.run(scenario()) == {
        "newest two": [ids[5], ids[4]],
        "before an id": [ids[2], ids[1], ids[0]],
        "before an instant": [ids[1], ids[0]],
        "of u, cancelled": [ids[2]],
        "dead letters": [ids[1]],
        "unfinished": [ids[2], ids[3], ids[4], ids[5]],  # cancelled for shutdown, pending, running, pending
        "requeued": (RunStatus.PENDING, None, None, "2026-01-01T00:03:00.000Z"),
        "stats": {
            "u": ({"completed": 1, "cancelled": 1, "running": 1}, ids[4]),
            "t": ({"failed": 1, "pending": 2}, ids[5]),
        },
        "missing": None,
    }


def test_a_command_attempts_process_group_is_kept(store_url: str) -> None:
    group = ProcessGroup(pgid=4242, start_ticks=2**40 + 7, boot_id="9f1c2d3e-boot")  # ticks past 32 bits

    async def scenario() -> Run | None:
        store = make_store(store_url)
        await store.open()
        run = new_run()
        await store.create_run(run)
        await store.start_attempt(run.id, 1, "2026-01-01T00:00:01.000Z")
        await store.record_process(run.id, 1, group)
        await store.end_attempt(
            run.id, 1, status=RunStatus.FAILED, error="x", at="2026-01-01T00:00:02.000Z", then=RunStatus.PENDING
        )
        await store.start_attempt(run.id, 2, "2026-01-01T00:00:03.000Z")
        await store.close()
        store = make_store(store_url)  # what a restart reads
        await store.open()
        stored = await store.get_run(run.id)
        await store.close()
        return stored

    recorded = asyncio.run(scenario())
    assert recorded is not None and [a.process for a in recorded.attempts] == [group, None]
    assert [a.status for a in recorded.attempts] == [RunStatus.FAILED, RunStatus.RUNNING]


def test_two_stores_on_one_database_store_each_key_and_slot_once(store_url: str) -> None:
    """Two daemons receiving the same deliveries and firing the same slots at once create one run each (SPEC 10)."""

    def slot_run(nominal: str) -> Run:
        return replace(new_run(trigger="s"), source=Source.SCHEDULE, nominal_time=nominal)

    async def scenario() -> tuple[list[list[Created]], int]:
        first, second = make_store(store_url), make_store(store_url)
        await first.open()
        await second.open()
        keys = [f"delivery-{i}" for i in range(40)]
        slots = [f"2026-01-01T00:{i:02d}:00.000Z" for i in range(40)]
        outcomes = []
        for store in (first, second, first, second):  # both stores get every firing, at the same time
            firings = [store.create_run(new_run(key=k), 60) for k in keys]
            firings += [store.create_run(slot_run(n)) for n in slots]
            outcomes.append(asyncio.gather(*firings))
        created = list(await asyncio.gather(*outcomes))
        stored = len(await first.list_runs(limit=1000))
        await first.close()
        await second.close()
        return created, stored

    created, stored = asyncio.run(scenario())
    assert stored == 80
    for i in range(80):
        named = {outcome[i].run_id for outcome in created}
        assert len(named) == 1  # every store names the one run
        assert sorted(outcome[i].duplicate for outcome in created) == [False, True, True, True]


def test_run_ids_are_26_crockford_digits_that_carry_their_millisecond_and_sort_by_it() -> None:
    digits = "0123456789abcdefghjkmnpqrstvwxyz"
    before = time.time_ns() // 1_000_000
    first = new_run_id()
    time.sleep(0.003)
    second = new_run_id()
    assert len(first) == len(second) == 26 and set(first + second) <= set(digits)
    assert first < second
    millis = 0
    for char in first[:10]:
        millis = millis * 32 + digits.index(char)
    assert before <= millis <= before + 50
    assert len({new_run_id() for _ in range(10_000)}) == 10_000


def test_postgresql_daemons_starting_together_migrate_once(postgres_url: str) -> None:
    async def scenario() -> list[int]:
        stores = [make_store(postgres_url) for _ in range(4)]
        await asyncio.gather(*(store.open() for store in stores))  # a fresh database: all four migrate at once
        await stores[0].create_run(new_run())
        counts = [len(await store.list_runs()) for store in stores]
        versions = await stores[0]._read(lambda c: _fetch(c, "SELECT count(*), max(version) FROM triggerd_schema"))
        for store in stores:
            await store.close()
        return [*counts, *versions[0]]

    from triggerd.store.pg_migrations import MIGRATIONS as PG_MIGRATIONS

    assert asyncio.run(scenario()) == [1, 1, 1, 1, 1, len(PG_MIGRATIONS)]


async def _fetch(conn: Any, query: str) -> list[Any]:
    return list(await (await conn.execute(query)).fetchall())


def test_postgresql_a_password_in_the_url_never_reaches_an_error(postgres_server: Any) -> None:
    url = f"postgresql://triggerd:hunter2-secret@127.0.0.1:{postgres_server.port}/no_such_database"

    async def scenario() -> None:
        await make_store(url).open()

    with pytest.raises(StoreError) as raised:
        asyncio.run(scenario())
    message = str(raised.value)
    assert message.startswith(f"cannot open store postgresql://127.0.0.1:{postgres_server.port}/no_such_database: ")
    assert "no_such_database" in message and "hunter2" not in message


def test_postgresql_a_database_that_goes_away_fails_writes_and_readiness_until_it_returns(
    postgres_server: Any, postgres_url: str
) -> None:
    from triggerd.store.postgres import PostgresStore

    async def scenario() -> tuple[list[str], str | None, str | None, int]:
        store = PostgresStore(postgres_url, wait_timeout=1.0)
        await store.open()
        await store.create_run(new_run())
        await asyncio.to_thread(postgres_server.stop, "fast")
        errors = []
        try:
            for call in (store.create_run(new_run()), store.ping()):
                try:
                    await call
                    errors.append("")
                except StoreError as exc:
                    errors.append(str(exc).split(":")[0])
            failure = store.write_failure
        finally:
            await asyncio.to_thread(postgres_server.start)
        async with asyncio.timeout(10):  # readiness comes back with the database, as /readyz is polled
            while True:
                try:
                    await store.ping()  # the pool and the writer connect again
                    break
                except StoreError:
                    await asyncio.sleep(0.1)
        recovered = store.write_failure
        await store.create_run(new_run())
        stored = len(await store.list_runs())
        await store.close()
        return errors, failure, recovered, stored

    errors, failure, recovered, stored = asyncio.run(scenario())
    assert errors == ["store commit failed", "store read failed"]
    assert failure is not None and recovered is None
    assert stored == 2  # the run refused while the database was away was never acknowledged, nor stored


def test_postgresql_the_first_read_after_a_restart_gets_past_every_dropped_pool_connection(
    postgres_server: Any, postgres_url: str
) -> None:
    from triggerd.store.postgres import PostgresStore

    async def scenario() -> tuple[int, int]:
        store = PostgresStore(postgres_url, pool_size=4)
        await store.open()
        try:
            await store.create_run(new_run())
            # Reads at once hold several pooled connections, idle afterwards; a restart drops them all.
            await asyncio.gather(*(store.list_runs() for _ in range(16)))
            pooled = int(store._pool.get_stats()["pool_size"]) if store._pool is not None else 0
            await asyncio.to_thread(postgres_server.stop, "fast")
            await asyncio.to_thread(postgres_server.start)
            return pooled, len(await store.list_runs())  # one read, no retry of ours
        finally:
            await store.close()

    pooled, listed = asyncio.run(scenario())
    assert pooled >= 2  # else the read below proves nothing
    assert listed == 1


def test_source_event_ids_dead_messages_and_cursors(store_url: str) -> None:
    """SPEC 5.4's store side: an event id is seen until it expires; a poison message is kept once
    however often it is redelivered; a source's cursor."""

    async def scenario() -> None:
        store = make_store(store_url)
        await store.open()
        assert await store.events_seen("orders", ["e1"], "2026-01-01T00:00:00.000Z") == set()
        await store.commit_events([("orders", "e1", "2026-01-02T00:00:00.000Z")])
        assert await store.events_seen("orders", ["e0", "e1"], "2026-01-01T12:00:00.000Z") == {"e1"}
        assert await store.events_seen("orders", ["e1"], "2026-01-02T00:00:00.000Z") == set()  # expired
        assert await store.events_seen("other", ["e1"], "2026-01-01T12:00:00.000Z") == set()  # per source
        many = [("orders", f"m{n}", "2026-01-02T00:00:00.000Z") for n in range(450)]  # more than 400 parameters
        await store.commit_events([("orders", "e1", "2026-01-03T00:00:00.000Z"), *many])
        ids = ["e1", "e2", *(m for _, m, _ in many)]
        # a new expiry replaces the old
        assert await store.events_seen("orders", ids, "2026-01-02T12:00:00.000Z") == {"e1"}
        assert len(await store.events_seen("orders", ids, "2026-01-01T12:00:00.000Z")) == 451

        poison = DeadMessage(
            "orders:1-0", "orders", "body is not JSON", b"\xff{", {"k": "v"}, "1-0", "2026-01-01T00:00:01.000Z"
        )
        await store.add_dead_message(poison)
        await store.add_dead_message(replace(poison, reason="again"))  # the same message redelivered
        later = replace(poison, id="jobs:7", source_id="jobs", broker_id="7", received_at="2026-01-01T00:00:02.000Z")
        await store.add_dead_message(later)
        assert await store.dead_messages() == [later, poison]
        assert await store.dead_messages(source_id="orders") == [poison]
        assert await store.dead_messages(limit=1) == [later]

        assert await store.source_cursor("feed") is None
        await store.save_source_cursor("feed", "41", "2026-01-01T00:00:00.000Z")
        await store.save_source_cursor("feed", "42", "2026-01-01T00:00:01.000Z")
        assert await store.source_cursor("feed") == "42"

        await store.prune("2026-01-01T00:00:02.000Z", "2026-01-04T00:00:00.000Z")
        assert await store.events_seen("orders", ["e1"], "2026-01-02T12:00:00.000Z") == set()
        assert await store.dead_messages() == [later]
        await store.close()

    asyncio.run(scenario())


def test_count_event_drops_old_entries_ignores_a_redelivery_and_clears_on_the_crossing(store_url: str) -> None:
    """A counting window as the store keeps it (SPEC 3.4): the horizon, a redelivered event id, the
    crossing that clears it, a changed trigger's fingerprint that starts afresh."""

    def entry(event_id: str, second: int) -> dict[str, Any]:
        return {"received_at": f"2026-01-01T00:00:{second:02d}.000Z", "event": {"id": event_id}}

    async def scenario() -> None:
        store = make_store(store_url)
        await store.open()
        horizon = "2026-01-01T00:00:00.000Z"
        assert await store.count_event("t", "g", "fp", entry("e1", 1), horizon, 3) is None
        assert await store.count_event("t", "g", "fp", entry("e1", 2), horizon, 3) is None  # redelivered
        assert await store.count_event("t", "other", "fp", entry("e2", 2), horizon, 3) is None  # another group
        windows = sorted(await store.load_windows())
        assert windows == [("t", "g", "fp", [entry("e1", 1)]), ("t", "other", "fp", [entry("e2", 2)])]
        # e1 was received at the new horizon: it has left the window, so e2 and e3 do not cross
        assert await store.count_event("t", "g", "fp", entry("e2", 5), "2026-01-01T00:00:01.000Z", 3) is None
        assert await store.count_event("t", "g", "fp", entry("e3", 6), "2026-01-01T00:00:01.000Z", 3) is None
        counted = await store.count_event("t", "g", "fp", entry("e4", 7), "2026-01-01T00:00:01.000Z", 3)
        assert counted == [entry("e2", 5), entry("e3", 6), entry("e4", 7)]
        assert await store.load_windows() == [("t", "other", "fp", [entry("e2", 2)])]
        # the trigger changed: its window under the old fingerprint counts for nothing
        assert await store.count_event("t", "other", "fp2", entry("e5", 8), horizon, 2) is None
        assert await store.load_windows() == [("t", "other", "fp2", [entry("e5", 8)])]
        # the same id from another source is another event
        elsewhere = {"received_at": "2026-01-01T00:00:09.000Z", "event": {"id": "e5", "source": "elsewhere"}}
        assert await store.count_event("t", "other", "fp2", elsewhere, horizon, 2) == [entry("e5", 8), elsewhere]
        assert await store.load_windows() == []
        await store.close()

    asyncio.run(scenario())


def test_a_crossing_stays_pending_with_its_window_until_cleared(store_url: str) -> None:
    """The counting windows' outbox (SPEC 9, 10): a crossing is committed with its count and read
    back by pending_crossings until clear_crossing, whatever else the window does meanwhile; an
    event a pending crossing holds is not counted again (a redelivery of the crossing event)."""

    def entry(event_id: str, second: int) -> dict[str, Any]:
        return {"received_at": f"2026-01-01T00:00:{second:02d}.000Z", "event": {"id": event_id, "source": "s"}}

    async def scenario() -> None:
        store = make_store(store_url)
        await store.open()
        horizon = "2026-01-01T00:00:00.000Z"
        assert await store.pending_crossings() == []
        assert await store.count_event("t", "g", "fp", entry("e1", 1), horizon, 2) is None
        crossing = [entry("e1", 1), entry("e2", 2)]
        assert await store.count_event("t", "g", "fp", entry("e2", 2), horizon, 2) == crossing
        assert await store.pending_crossings() == [("t", "g", crossing)]
        # the crossing event redelivered counts nothing; a new one starts the next window
        assert await store.count_event("t", "g", "fp", entry("e2", 3), horizon, 2) is None
        assert await store.load_windows() == []
        assert await store.count_event("t", "g", "fp", entry("e3", 4), horizon, 2) is None
        # emptying the window (a changed trigger's windows dropped) keeps the pending crossing
        await store.save_windows([("t", "g", "fp", [])])
        assert await store.load_windows() == []
        assert await store.pending_crossings() == [("t", "g", crossing)]
        # names no crossing: nothing changes
        await store.clear_crossing("t", "g", "s/e1@2026-01-01T00:00:01.000Z")
        assert await store.pending_crossings() == [("t", "g", crossing)]
        await store.clear_crossing("t", "g", "s/e2@2026-01-01T00:00:02.000Z")
        assert await store.pending_crossings() == []
        # a second clear (two daemons firing it) is harmless
        await store.clear_crossing("t", "g", "s/e2@2026-01-01T00:00:02.000Z")
        assert await store.pending_crossings() == []
        # a cleared crossing still holds its completing event while that is within the window
        assert await store.count_event("t", "g", "fp", entry("e2", 5), horizon, 2) is None
        assert await store.load_windows() == []
        assert await store.count_event("t", "g", "fp", entry("e4", 5), horizon, 2) is None
        assert await store.load_windows() == [("t", "g", "fp", [entry("e4", 5)])]
        # once it has left the window, the same event counts afresh
        later = "2026-01-01T00:00:02.000Z"
        assert await store.count_event("t", "g", "fp", entry("e2", 6), later, 2) == [entry("e4", 5), entry("e2", 6)]
        await store.close()

    asyncio.run(scenario())


def test_two_stores_on_one_database_counting_at_once_cross_once_per_threshold(store_url: str) -> None:
    """Two daemons counting into the same windows at once count together (SPEC 10): 50 events per
    window, threshold 7, are 7 crossings of 7 distinct events each, whichever store counted them."""

    async def scenario() -> list[list[dict[str, Any]]]:
        first, second = make_store(store_url), make_store(store_url)
        await first.open()
        await second.open()

        def count(store: Any, i: int) -> Any:
            entry = {"received_at": "2026-01-01T00:00:01.000Z", "event": {"id": f"e{i}"}}
            return store.count_event("t", f"g{i % 2}", "fp", entry, "2026-01-01T00:00:00.000Z", 7)

        # Both windows exist before the race: the insert of a new window's row must not be what
        # keeps the two stores apart, the lock taken when the window is read must.
        await asyncio.gather(count(first, 0), count(first, 1))
        counts = [count(first if (i // 2) % 2 else second, i) for i in range(2, 100)]
        crossings = [c for c in await asyncio.gather(*counts) if c is not None]
        left = await first.load_windows()
        await first.close()
        await second.close()
        assert sorted(len(w[3]) for w in left) == [1, 1]  # 50 - 7 * 7 in each window
        return crossings

    crossings = asyncio.run(scenario())
    assert len(crossings) == 2 * (50 // 7)
    assert all(len(c) == 7 for c in crossings)
    ids = [e["event"]["id"] for c in crossings for e in c]
    assert len(ids) == len(set(ids))


def test_an_input_reads_back_as_written_nan_big_integers_and_nulls_included(store_url: str) -> None:
    # The row's JSON is written by orjson only where it gives the same value back (rows.dumps).
    written = {"nan": float("nan"), "inf": float("inf"), "big": 2**70, "none": None, "text": "é\u2028", "n": 1.5}

    async def scenario() -> dict[str, Any]:
        store = make_store(store_url)
        await store.open()
        run = replace(new_run(), input=written)
        await store.create_run(run)
        stored = await store.get_run(run.id)
        await store.close()
        assert stored is not None
        return dict(stored.input)

    read = asyncio.run(scenario())
    assert read["nan"] != read["nan"]  # NaN, not null
    assert {k: v for k, v in read.items() if k != "nan"} == {k: v for k, v in written.items() if k != "nan"}
