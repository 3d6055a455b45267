"""The PostgreSQL store (SPEC 10): one database shared by several daemons, through psycopg 3.

The same two paths as the SQLite store. Writes are queued to one writer task with a
connection of its own: it takes whatever has queued up, runs each function in its own
savepoint of one transaction, inserts all the new runs with one statement per table,
commits once, and only then settles the futures, so many firings share one commit and a
handful of round trips. Reads take a connection from a pool (store.pool_size).

Whether a firing becomes a run is decided by the database, not by the daemon: an
idempotency key and a schedule slot are primary keys, claimed with INSERT ... ON CONFLICT.
A daemon that loses the race for a key or slot to another daemon's concurrent batch waits
for that batch's commit, finds the key taken, and names the other daemon's run
(postgres_inserts.py).

Claims, leases and cancel requests are postgres_claims.py (a batch's claims run first, under
the claim lock); writes that give the daemons work NOTIFY at commit, and pg_listen.py is the
LISTEN side (Store.listen).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from triggerd.errors import StoreError
from triggerd.runs import ProcessGroup, Run, RunStatus
from triggerd.store.abc import Created, RunSummary, TriggerStats
from triggerd.store.pg_listen import Listener
from triggerd.store.pg_migrations import ADVISORY_LOCK, MIGRATIONS
from triggerd.store.postgres_claims import Claim, PostgresClaims, fold_loads, notify
from triggerd.store.postgres_flow import PostgresFlow
from triggerd.store.postgres_inserts import insert_one, insert_runs
from triggerd.store.postgres_sources import ClearCrossing, CountEvent, SourceTables, save_windows
from triggerd.store.rows import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    SKIP_COUNTS,
    UNFINISHED,
    NewRun,
    attempts_by_run,
    dumps,
    fold_skips,
    fold_summary,
    listing_query,
    loads,
    run_from_row,
    summary_query,
)

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Operation = Callable[[Conn], Awaitable[T]]
_MAX_BATCH = 512
_STOP = object()


def describe(url: str) -> str:
    """The URL as logs may show it: scheme, hosts, ports and database, never the user or password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class PostgresStore(SourceTables, PostgresClaims, PostgresFlow):
    """A Store in a PostgreSQL database that several daemons may share (see triggerd.store.abc)."""

    def __init__(self, url: str, pool_size: int = 10, connect_timeout: int = 10, wait_timeout: float = 5.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout  # libpq's, for each new connection
        self.wait_timeout = wait_timeout  # how long a read waits for a pooled connection (the database away)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._conn: Conn | None = None
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener: Listener | None = None
        self.commits = 0  # transactions committed: fewer than writes when group commit batches them
        self.writes = 0
        self.write_failure: str | None = None  # why the last commit failed; None once one succeeds

    # --- lifecycle ------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": self.connect_timeout, "application_name": "triggerd"}

    async def _connection(self) -> Conn:
        """The writer's connection, made again after the last one broke (the database restarted, say)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._conn = await psycopg.AsyncConnection.connect(self.url, **self._options())
        return self._conn

    async def open(self) -> None:
        try:
            conn = await self._connection()
            await _migrate(conn)
            self._pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs=self._options(),
                open=False,
                timeout=self.wait_timeout,
            )
            await self._pool.open(wait=True, timeout=self.connect_timeout)
        except psycopg.Error as exc:
            await self._release()
            raise StoreError(f"cannot open store {describe(self.url)}: {exc}") from exc
        except StoreError:
            await self._release()
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="triggerd-store-write")

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._writer is not None:
            self._queue.put_nowait(_STOP)
            await self._writer
            self._writer = None
        await self._release()

    async def _release(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- the two paths --------------------------------------------------------

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._queue.get()]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if any(item is _STOP for item in batch):
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self.write_failure, outcomes = await self._commit_batch(batch)
                if self.write_failure is None:
                    self.commits += 1
                self.writes += len(batch)
                for future, result, error in outcomes:
                    if future.cancelled():
                        continue
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(result)

    async def _commit_batch(self, batch: Sequence[Any]) -> tuple[str | None, list[_Outcome]]:
        """Run a batch of writes in one transaction: (None if it committed, else why not; each write's outcome).

        The writes of one batch were all queued before any was answered, so none depends on
        another: the functions run first, then the new runs together.
        """
        outcomes: list[_Outcome] = []
        new = [item for item in batch if isinstance(item[0], NewRun)]
        # Claims before other writes: they take the claim lock, and a transaction must not wait
        # for it while holding row locks that a claim holding it may wait for (postgres_claims.py).
        # Counts before claims: they hold only window rows, which no claim touches (_write_order).
        functions = sorted((item for item in batch if not isinstance(item[0], NewRun)), key=_write_order)
        try:
            conn = await self._connection()
            async with conn.transaction():
                for operation, future in functions:
                    outcomes.append((future, *await _isolated(conn, operation)))
                if new:
                    ops = [op for op, _ in new]
                    result, error = await _isolated(conn, lambda c: insert_runs(c, ops))
                    if error is None:
                        outcomes.extend(
                            (future, created, None) for (_, future), created in zip(new, result, strict=True)
                        )
                    else:  # one at a time, so that a bad run fails alone
                        for op, future in new:
                            outcomes.append((future, *await _isolated(conn, insert_one(op))))
        except (psycopg.Error, OSError) as exc:  # anything else would stop the writer and hang every write
            # A lost connection leaves it unknown whether COMMIT happened: the caller answers
            # 503, and a sender's retry with the same idempotency key finds the run if it did.
            failure = StoreError(f"store commit failed: {exc}")
            return str(exc), [(future, None, failure) for _, future in batch]
        return None, outcomes

    async def _write(self, operation: Operation[T] | NewRun) -> T:
        if self._writer is None:
            raise StoreError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((operation, future))
        return await future

    async def _read(self, operation: Operation[T]) -> T:
        if self._pool is None:
            raise StoreError("store is not open")
        for retry in (True, False):
            try:
                async with self._pool.connection() as conn:
                    return await operation(conn)
            except PoolTimeout as exc:  # no connection within wait_timeout: the database is away
                raise StoreError(f"store read failed: {exc}") from exc
            except psycopg.OperationalError as exc:
                # A pooled connection the database dropped (a restart) fails once; so would every
                # other idle one it dropped: have the pool test them all, then try once more.
                if not retry:
                    raise StoreError(f"store read failed: {exc}") from exc
                await self._pool.check()
            except psycopg.Error as exc:
                raise StoreError(f"store read failed: {exc}") from exc
        raise AssertionError("unreachable")

    # --- the contract ---------------------------------------------------------

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1"))
        if self.write_failure is not None:  # the database was away: write once to learn whether it is back
            await self._write(
                lambda c: c.execute(
                    "INSERT INTO probe (id, at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at"
                )
            )

    async def listen(self, callback: Callable[[str], None]) -> None:
        if self._listener is None:
            self._listener = Listener(self.url, self._options(), callback, describe(self.url), self._writer_pid)
            self._listener.start()

    def _writer_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def create_run(self, run: Run, dedupe_seconds: float = 0.0, now: str = "") -> Created:
        created: Created = await self._write(NewRun(run, dedupe_seconds, now or run.created_at))
        return created

    async def create_runs(self, runs: Sequence[tuple[Run, float]], now: str) -> list[Created]:
        new = [NewRun(run, dedupe_seconds, now) for run, dedupe_seconds in runs]
        return await self._write(lambda c: insert_runs(c, new)) if new else []

    async def last_slots(self) -> dict[str, str]:
        async def last(conn: Conn) -> dict[str, str]:
            cur = await conn.execute("SELECT trigger_id, max(nominal) FROM schedule_slots GROUP BY trigger_id")
            return {trigger_id: nominal for trigger_id, nominal in await cur.fetchall()}

        return await self._read(last)

    async def load_windows(self) -> list[tuple[str, str, str, Any]]:
        async def load(conn: Conn) -> list[tuple[str, str, str, Any]]:
            cur = await conn.execute(
                "SELECT trigger_id, group_key, fingerprint, events FROM event_windows WHERE events <> '[]'"
            )
            return [(t, g, f, loads(e)) for t, g, f, e in await cur.fetchall()]

        return await self._read(load)

    async def save_windows(self, windows: list[tuple[str, str, str, Any]]) -> None:
        await self._write(lambda conn: save_windows(conn, windows))

    async def get_run(self, run_id: str) -> Run | None:
        runs = await self._read(lambda c: _select_runs(c, "WHERE id = %s", (run_id,)))
        return runs[0] if runs else None

    async def list_runs(
        self,
        *,
        trigger_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: str | None = None,
        source: str | None = None,
    ) -> list[Run]:
        query, params = listing_query(trigger_id, status, limit, before, "%s", source)
        return await self._read(lambda c: _select_runs(c, query, params))

    async def dead_letters(self, limit: int = 100) -> list[Run]:
        return await self._read(lambda c: _select_runs(c, "WHERE dead_letter ORDER BY id DESC LIMIT %s", (limit,)))

    async def unfinished_runs(self) -> list[Run]:
        return await self._read(lambda c: _select_runs(c, f"WHERE {UNFINISHED} ORDER BY id", ()))

    async def start_attempt(self, run_id: str, number: int, at: str) -> None:
        async def start(conn: Conn) -> None:
            await conn.execute(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, %s), next_attempt_at = NULL "
                "WHERE id = %s",
                (at, run_id),
            )
            await conn.execute(
                "INSERT INTO attempts (run_id, number, started_at, status) VALUES (%s, %s, %s, 'running') "
                "ON CONFLICT (run_id, number) DO UPDATE SET started_at = EXCLUDED.started_at, status = 'running', "
                "finished_at = NULL, error = NULL, pgid = NULL, pgid_start_ticks = NULL, boot_id = NULL",
                (run_id, number, at),
            )

        await self._write(start)

    async def record_process(self, run_id: str, number: int, process: ProcessGroup) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE attempts SET pgid = %s, pgid_start_ticks = %s, boot_id = %s WHERE run_id = %s AND number = %s",
                (process.pgid, process.start_ticks, process.boot_id, run_id, number),
            )
        )

    async def record_steps(self, run_id: str, number: int, steps: Any) -> None:
        text = dumps(steps)
        await self._write(
            lambda c: c.execute(
                "UPDATE attempts SET steps = %s WHERE run_id = %s AND number = %s AND finished_at IS NULL",
                (text, run_id, number),
            )
        )

    async def end_attempt(
        self,
        run_id: str,
        number: int,
        *,
        status: RunStatus,
        error: str | None,
        at: str,
        then: RunStatus,
        output: Any = None,
        usage: Any = None,
        reason: str | None = None,
        next_attempt_at: str | None = None,
        dead_letter: bool = False,
        steps: Any = None,
    ) -> bool:
        async def end(conn: Conn) -> bool:
            # The run's row first, as a takeover locks it: the same order, so the two never deadlock.
            await conn.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id,))
            cur = await conn.execute(
                "UPDATE attempts SET finished_at = %s, status = %s, error = %s, steps = %s "
                "WHERE run_id = %s AND number = %s AND finished_at IS NULL",
                (at, str(status), error, dumps(steps), run_id, number),
            )
            if not cur.rowcount:
                return False  # taken over after its lease expired: the outcome comes too late
            release = "claimed_by = NULL, lease_until = NULL, cancel_requested = NULL"
            if then is RunStatus.PENDING:
                await conn.execute(
                    f"UPDATE runs SET status = 'pending', error = %s, next_attempt_at = %s, {release} WHERE id = %s",
                    (error, next_attempt_at, run_id),
                )
            else:
                await conn.execute(
                    "UPDATE runs SET status = %s, finished_at = %s, output = %s, usage = %s, error = %s, reason = %s, "
                    f"dead_letter = %s, next_attempt_at = NULL, {release} WHERE id = %s",
                    (str(then), at, dumps(output), dumps(usage), error, reason, dead_letter, run_id),
                )
            await notify(conn, "ended")  # a limit has room again, for any daemon
            return True

        return await self._write(end)

    async def finish_run(
        self, run_id: str, status: RunStatus, *, at: str, reason: str | None = None, error: str | None = None
    ) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE runs SET status = %s, finished_at = %s, reason = %s, error = COALESCE(%s, error), "
                "next_attempt_at = NULL WHERE id = %s",
                (str(status), at, reason, error, run_id),
            )
        )

    async def requeue(self, run_id: str, *, at: str | None = None) -> None:
        async def requeue(conn: Conn) -> None:
            cur = await conn.execute(
                "UPDATE runs SET status = 'pending', reason = NULL, finished_at = NULL, next_attempt_at = %s "
                "WHERE id = %s AND status = 'cancelled'",  # another daemon starting may have requeued it already
                (at, run_id),
            )
            if cur.rowcount:
                await notify(conn, "created")

        await self._write(requeue)

    async def trigger_stats(self) -> dict[str, TriggerStats]:
        async def stats(conn: Conn) -> dict[str, TriggerStats]:
            counts: dict[str, dict[str, int]] = {}
            cur = await conn.execute("SELECT trigger_id, status, count(*) FROM runs GROUP BY trigger_id, status")
            for trigger_id, status, n in await cur.fetchall():
                counts.setdefault(trigger_id, {})[status] = n
            latest = await _select_runs(conn, "WHERE id IN (SELECT max(id) FROM runs GROUP BY trigger_id)", ())
            newest = {run.trigger_id: run for run in latest}
            return {t: TriggerStats(c, newest.get(t)) for t, c in counts.items()}

        return await self._read(stats)

    async def run_summary(self, since: str) -> RunSummary:
        async def summary(conn: Conn) -> RunSummary:
            cur = await conn.execute(summary_query("%s", "dead_letter"), (since,))
            return fold_summary(await cur.fetchall())

        return await self._read(summary)

    async def skip_counts(self) -> dict[str, dict[str, int]]:
        async def skips(conn: Conn) -> dict[str, dict[str, int]]:
            cur = await conn.execute(SKIP_COUNTS)
            return fold_skips(await cur.fetchall())

        return await self._read(skips)

    async def prune(self, finished_before: str, now: str) -> int:
        async def prune(conn: Conn) -> int:
            cur = await conn.execute(
                "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < %s "
                "AND status NOT IN ('pending', 'running') AND NOT dead_letter",
                (finished_before,),
            )
            await conn.execute("DELETE FROM dedupe WHERE expires_at <= %s", (now,))
            await conn.execute("DELETE FROM source_events WHERE expires_at <= %s", (now,))
            await conn.execute("DELETE FROM dead_messages WHERE received_at < %s", (finished_before,))
            await conn.execute("DELETE FROM instances WHERE last_seen < %s", (finished_before,))
            await fold_loads(conn)
            # Planning resumes after each trigger's latest slot, so older slot rows only need
            # to live as long as their runs.
            await conn.execute(
                "DELETE FROM schedule_slots WHERE nominal < %s AND nominal < "
                "(SELECT max(nominal) FROM schedule_slots AS newer WHERE newer.trigger_id = schedule_slots.trigger_id)",
                (finished_before,),
            )
            return int(cur.rowcount)

        return await self._write(prune)


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def _write_order(item: tuple[Any, Any]) -> tuple[int, str, str]:
    """Counts (and clears of crossings) first, by window, then claims, then the rest: a count
    holds only window rows when it waits for another, and a claim's lock holder never waits for a
    window row (no cycle)."""
    if isinstance(item[0], (CountEvent, ClearCrossing)):
        return (0, *item[0].key)
    return (1 if isinstance(item[0], Claim) else 2, "", "")


async def _migrate(conn: Conn) -> None:
    """Apply the migrations this database lacks, one daemon at a time (a session advisory lock)."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK,))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS triggerd_schema (version INTEGER NOT NULL)")
        row = await (await conn.execute("SELECT max(version) FROM triggerd_schema")).fetchone()
        version = row[0] if row is not None and row[0] is not None else 0
        if version > len(MIGRATIONS):
            raise StoreError(f"store schema version {version} is newer than this triggerd knows ({len(MIGRATIONS)})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with conn.transaction():
                for statement in script:
                    await conn.execute(statement)
                await conn.execute("DELETE FROM triggerd_schema")
                await conn.execute("INSERT INTO triggerd_schema (version) VALUES (%s)", (number,))
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK,))


async def _isolated(conn: Conn, operation: Operation[Any]) -> tuple[Any, BaseException | None]:
    """Run one write in its own savepoint: if it fails, it alone is rolled back.

    A lost connection is not one write's failure: it propagates and fails the batch.
    """
    try:
        async with conn.transaction():
            return await operation(conn), None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if conn.broken or conn.closed:
            raise
        return None, StoreError(f"store write failed: {exc}")  # a statement cancelled, a deadlock: this write
    except StoreError as exc:
        return None, exc
    except Exception as exc:
        return None, StoreError(f"store write failed: {exc}")


async def _select_runs(conn: Conn, tail: str, params: Sequence[Any]) -> list[Run]:
    cur = await conn.execute(f"SELECT {RUN_COLUMNS} FROM runs {tail}", params)
    rows = await cur.fetchall()
    if not rows:
        return []
    cur = await conn.execute(
        f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ANY(%b::text[]) ORDER BY run_id, number",
        ([row[0] for row in rows],),
    )
    attempts = attempts_by_run(await cur.fetchall())
    return [run_from_row(r, attempts) for r in rows]
