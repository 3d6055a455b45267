"""The SQLite store: WAL, migrations, and group commit on one writer thread.

Every write is queued to the writer thread: a new run as a NewRun, anything else
as a small function of a connection. The thread takes whatever has queued up, runs
each function inside its own savepoint of one transaction, inserts all the new runs
with one statement per table, commits once, and only then settles the futures:
under load many firings share one commit (and one fsync) without any of them
being acknowledged before it is durable. Reads run on a second thread with
their own connection; WAL lets them proceed while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from triggerd.config.models import SyncLevel
from triggerd.errors import StoreError
from triggerd.runs import ProcessGroup, Run, RunStatus
from triggerd.store.abc import Created, RunSummary, TriggerStats
from triggerd.store.flow import burst_heads, supersede
from triggerd.store.migrations import MIGRATIONS
from triggerd.store.rows import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    SKIP_COUNTS,
    UNFINISHED,
    NewRun,
    attempts_by_run,
    decide,
    dumps,
    fold_skips,
    fold_summary,
    listing_query,
    loads,
    run_from_row,
    summary_query,
)
from triggerd.store.sqlite_claims import SqliteClaims
from triggerd.store.sqlite_flow import SqliteFlow
from triggerd.store.sqlite_sources import SourceTables, save_windows

T = TypeVar("T")
_MAX_BATCH = 512
_STOP = object()
# When the last commit held more than one write and every write at hand is patient (the dispatcher's
# own), the writer waits this long for the next loop turns' writes to join them (PostgreSQL's
# commit_delay, under load only): at 1,000 runs/s 0.3 commits per run instead of 1, a fifth less CPU
# per run (issue 17). Others are never held: a sender waits on a firing's commit (6,000 -> 4,000 req/s).
_COMMIT_WAIT = 0.001
_ROW_MARKS = "(" + ", ".join("?" * 22) + ")"


@dataclass(frozen=True, slots=True)
class _Patient:
    """A write the writer may hold to share a busy commit (SqliteStore._write_patiently)."""

    operation: Callable[[sqlite3.Connection], Any]

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.operation(conn)


class SqliteStore(SourceTables, SqliteClaims, SqliteFlow):
    """A Store in one SQLite file (see triggerd.store.abc for the contract)."""

    def __init__(self, path: Path, sync: SyncLevel = SyncLevel.NORMAL, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.sync = sync
        self.busy_timeout = busy_timeout  # how long a write waits for a lock another process holds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of writes, and _STOP
        self._turns: dict[asyncio.AbstractEventLoop, list[Any]] = {}  # each loop's writes of its current turn
        self._writer: threading.Thread | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self.commits = 0  # transactions committed: fewer than writes when group commit batches them
        self.writes = 0
        self.write_failure: str | None = None  # why the last commit failed; None once one succeeds

    # --- lifecycle ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.sync is SyncLevel.FULL else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_conn = await asyncio.to_thread(self._connect)
            await asyncio.to_thread(_migrate, write_conn)
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triggerd-store-read")
            self._read_conn = await asyncio.get_running_loop().run_in_executor(self._reader, self._connect)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}{_read_only(self.path)}") from exc
        self._writer = threading.Thread(
            target=self._write_loop, args=(write_conn,), name="triggerd-store-write", daemon=True
        )
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            for loop in list(self._turns):
                self._hand_over(loop)
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._reader is not None:
            conn = self._read_conn
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._reader, conn.close)
            self._reader.shutdown(wait=True)
            self._reader = None

    # --- the two threads ------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stopping, busy = False, False
        while not stopping:
            handed = [self._queue.get()]
            self._take_queued(handed)
            if busy and all(
                isinstance(write[0], _Patient) for writes in handed if writes is not _STOP for write in writes
            ):
                time.sleep(_COMMIT_WAIT)  # see _COMMIT_WAIT
                self._take_queued(handed)
            stopping = any(writes is _STOP for writes in handed)
            batch = [write for writes in handed if writes is not _STOP for write in writes]
            busy = len(batch) > 1
            if batch:
                self.write_failure, outcomes = _commit_batch(conn, batch)
                if self.write_failure is None:
                    self.commits += 1
                self.writes += len(batch)
                _answer(outcomes)  # after the counts, so that a caller answered sees its commit counted
        conn.close()

    def _take_queued(self, handed: list[Any]) -> None:  # the hand-overs queued by now, up to _MAX_BATCH writes
        while sum(len(writes) for writes in handed if writes is not _STOP) < _MAX_BATCH:
            try:
                handed.append(self._queue.get_nowait())
            except queue.Empty:
                return

    async def _write(self, operation: Callable[[sqlite3.Connection], T] | NewRun) -> T:
        if self._writer is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = []
            loop.call_soon(self._hand_over, loop)
        turn.append((operation, future, loop))
        return await future

    async def _write_patiently(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """A write nobody outside waits on (claims, leases, process groups, ends): see _COMMIT_WAIT."""
        return await self._write(_Patient(operation))

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the writer a loop turn's writes at once: one wake-up of its thread, not one each."""
        if writes := self._turns.pop(loop, None):
            self._queue.put(writes)

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None or self._read_conn is None:
            raise StoreError("store is not open")
        conn = self._read_conn

        def call() -> T:
            try:
                return operation(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._reader, call)

    # --- the contract ---------------------------------------------------------

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
        if self.write_failure is not None:  # a full disk or a lock: write once to learn whether it cleared
            await self._write(
                lambda c: c.execute(
                    "INSERT OR REPLACE INTO probe (id, at) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                )
            )

    async def listen(self, callback: Callable[[str], None]) -> None:
        """No notifications between processes sharing a SQLite file: their polls find the work."""

    async def create_run(self, run: Run, dedupe_seconds: float = 0.0, now: str = "") -> Created:
        created: Created = await self._write(NewRun(run, dedupe_seconds, now or run.created_at))
        return created

    async def create_runs(self, runs: Sequence[tuple[Run, float]], now: str) -> list[Created]:
        new = [NewRun(run, dedupe_seconds, now) for run, dedupe_seconds in runs]
        return await self._write(lambda c: _insert_runs(c, new)) if new else []

    async def last_slots(self) -> dict[str, str]:
        def last(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT trigger_id, max(nominal) FROM schedule_slots GROUP BY trigger_id")
            return {trigger_id: nominal for trigger_id, nominal in rows}

        return await self._read(last)

    async def load_windows(self) -> list[tuple[str, str, str, Any]]:
        def load(conn: sqlite3.Connection) -> list[tuple[str, str, str, Any]]:
            rows = conn.execute(
                "SELECT trigger_id, group_key, fingerprint, events FROM event_windows WHERE events <> '[]'"
            )
            return [(t, g, f, loads(e)) for t, g, f, e in rows]

        return await self._read(load)

    async def save_windows(self, windows: list[tuple[str, str, str, Any]]) -> None:
        await self._write(lambda conn: save_windows(conn, windows))

    async def get_run(self, run_id: str) -> Run | None:
        runs = await self._read(lambda c: _select_runs(c, "WHERE id = ?", (run_id,)))
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
        query, params = listing_query(trigger_id, status, limit, before, "?", source)
        return await self._read(lambda c: _select_runs(c, query, params))

    async def dead_letters(self, limit: int = 100) -> list[Run]:
        return await self._read(lambda c: _select_runs(c, "WHERE dead_letter = 1 ORDER BY id DESC LIMIT ?", (limit,)))

    async def unfinished_runs(self) -> list[Run]:
        query = f"WHERE {UNFINISHED} ORDER BY id"
        return await self._read(lambda c: _select_runs(c, query, ()))

    async def start_attempt(self, run_id: str, number: int, at: str) -> None:
        def start(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?), next_attempt_at = NULL "
                "WHERE id = ?",
                (at, run_id),
            )
            conn.execute(
                "INSERT OR REPLACE INTO attempts (run_id, number, started_at, status) VALUES (?, ?, ?, 'running')",
                (run_id, number, at),
            )

        await self._write(start)

    async def record_process(self, run_id: str, number: int, process: ProcessGroup) -> None:
        await self._write_patiently(
            lambda c: c.execute(
                "UPDATE attempts SET pgid = ?, pgid_start_ticks = ?, boot_id = ? WHERE run_id = ? AND number = ?",
                (process.pgid, process.start_ticks, process.boot_id, run_id, number),
            )
        )

    async def record_steps(self, run_id: str, number: int, steps: Any) -> None:
        text = dumps(steps)
        await self._write_patiently(
            lambda c: c.execute(
                "UPDATE attempts SET steps = ? WHERE run_id = ? AND number = ? AND finished_at IS NULL",
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
        def end(conn: sqlite3.Connection) -> bool:
            if not conn.execute(
                "UPDATE attempts SET finished_at = ?, status = ?, error = ?, steps = ? "
                "WHERE run_id = ? AND number = ? AND finished_at IS NULL",
                (at, str(status), error, dumps(steps), run_id, number),
            ).rowcount:
                return False  # taken over after its lease expired: the outcome comes too late
            release = "claimed_by = NULL, lease_until = NULL, cancel_requested = NULL"
            if then is RunStatus.PENDING:
                conn.execute(
                    f"UPDATE runs SET status = 'pending', error = ?, next_attempt_at = ?, {release} WHERE id = ?",
                    (error, next_attempt_at, run_id),
                )
            else:
                conn.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, output = ?, usage = ?, error = ?, reason = ?, "
                    f"dead_letter = ?, next_attempt_at = NULL, {release} WHERE id = ?",
                    (str(then), at, dumps(output), dumps(usage), error, reason, int(dead_letter), run_id),
                )
            return True

        return await self._write_patiently(end)

    async def finish_run(
        self, run_id: str, status: RunStatus, *, at: str, reason: str | None = None, error: str | None = None
    ) -> None:
        def finish(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, reason = ?, error = COALESCE(?, error), "
                "next_attempt_at = NULL WHERE id = ?",
                (str(status), at, reason, error, run_id),
            )

        await self._write(finish)

    async def requeue(self, run_id: str, *, at: str | None = None) -> None:
        def requeue(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET status = 'pending', reason = NULL, finished_at = NULL, next_attempt_at = ? "
                "WHERE id = ? AND status = 'cancelled'",  # another daemon starting may have requeued it already
                (at, run_id),
            )

        await self._write(requeue)

    async def trigger_stats(self) -> dict[str, TriggerStats]:
        def stats(conn: sqlite3.Connection) -> dict[str, TriggerStats]:
            counts: dict[str, dict[str, int]] = {}
            for trigger_id, status, n in conn.execute(
                "SELECT trigger_id, status, count(*) FROM runs GROUP BY trigger_id, status"
            ):
                counts.setdefault(trigger_id, {})[status] = n
            latest = _select_runs(conn, "WHERE id IN (SELECT max(id) FROM runs GROUP BY trigger_id)", ())
            newest = {run.trigger_id: run for run in latest}
            return {t: TriggerStats(c, newest.get(t)) for t, c in counts.items()}

        return await self._read(stats)

    async def run_summary(self, since: str) -> RunSummary:
        query = summary_query("?", "dead_letter = 1")
        return await self._read(lambda c: fold_summary(c.execute(query, (since,))))

    async def skip_counts(self) -> dict[str, dict[str, int]]:
        return await self._read(lambda c: fold_skips(c.execute(SKIP_COUNTS)))

    async def prune(self, finished_before: str, now: str) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            deleted = conn.execute(
                "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? "
                "AND status NOT IN ('pending', 'running') AND dead_letter = 0",
                (finished_before,),
            ).rowcount
            conn.execute("DELETE FROM dedupe WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM source_events WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM dead_messages WHERE received_at < ?", (finished_before,))
            conn.execute("DELETE FROM instances WHERE last_seen < ?", (finished_before,))
            # Planning resumes after each trigger's latest slot, so older slot rows only need
            # to live as long as their runs.
            conn.execute(
                "DELETE FROM schedule_slots WHERE nominal < ? AND nominal < "
                "(SELECT max(nominal) FROM schedule_slots AS newer WHERE newer.trigger_id = schedule_slots.trigger_id)",
                (finished_before,),
            )
            return int(deleted)

        return await self._write(prune)


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(f"store schema version {version} is newer than this triggerd knows ({len(MIGRATIONS)})")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


_Outcome = tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, Any, BaseException | None]


def _commit_batch(conn: sqlite3.Connection, batch: Sequence[Any]) -> tuple[str | None, list[_Outcome]]:
    """Run a batch of writes in one transaction: (None if it committed, else why not; each write's outcome).

    The writes of one batch were all queued before any was answered, so none depends on
    another, and they may run in any order: the functions first, then the new runs together.
    They run as they are first; only if one fails is the transaction begun again, with each
    write in a savepoint of its own so that it fails alone. (Savepoints for every write cost two
    SQLite calls each, and each call hands the GIL to the event loop and back: issue 17.)
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        outcomes = _all_at_once(conn, batch)
        if outcomes is None:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = _one_by_one(conn, batch)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        failure = StoreError(f"store commit failed: {exc}")
        return str(exc), [(future, loop, None, failure) for _, future, loop in batch]
    return None, outcomes


def _all_at_once(conn: sqlite3.Connection, batch: Sequence[Any]) -> list[_Outcome] | None:
    """Every write of the batch with no savepoint; None, the transaction rolled back, if one failed."""
    outcomes: list[_Outcome] = []
    new = [item for item in batch if isinstance(item[0], NewRun)]
    try:
        for operation, future, loop in batch:
            if not isinstance(operation, NewRun):
                outcomes.append((future, loop, operation(conn), None))
        if new:
            created = _insert_runs(conn, [op for op, _, _ in new])
            outcomes.extend((future, loop, made, None) for (_, future, loop), made in zip(new, created, strict=True))
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return None
    return outcomes


def _one_by_one(conn: sqlite3.Connection, batch: Sequence[Any]) -> list[_Outcome]:
    """Every write of the batch in a savepoint of its own, so that a failing one is rolled back alone."""
    outcomes: list[_Outcome] = []
    new = [item for item in batch if isinstance(item[0], NewRun)]
    for operation, future, loop in batch:
        if not isinstance(operation, NewRun):
            outcomes.append((future, loop, *_isolated(conn, operation)))
    if new:
        result, error = _isolated(conn, partial(_insert_runs, new=[op for op, _, _ in new]))
        if error is None:
            outcomes.extend(
                (future, loop, created, None) for (_, future, loop), created in zip(new, result, strict=True)
            )
        else:  # one at a time, so that a bad run fails alone
            for op, future, loop in new:
                outcomes.append((future, loop, *_isolated(conn, partial(_insert_one, op))))
    return outcomes


def _answer(outcomes: list[_Outcome]) -> None:
    """Settle the futures of a batch on their event loops."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[1], []).append(outcome)
    for loop, settled in by_loop.items():  # one wake-up of each loop for the whole batch
        loop.call_soon_threadsafe(_settle, settled)


def _isolated(conn: sqlite3.Connection, operation: Callable[[sqlite3.Connection], Any]) -> tuple[Any, Exception | None]:
    """Run one write in its own savepoint: if it fails, it alone is rolled back."""
    conn.execute("SAVEPOINT op")
    try:
        result = operation(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return None, exc if isinstance(exc, StoreError) else StoreError(f"store write failed: {exc}")
    conn.execute("RELEASE op")
    return result, None


def _insert_runs(conn: sqlite3.Connection, new: Sequence[NewRun]) -> list[Created]:
    """Insert new runs, unless an unexpired idempotency key or a claimed schedule slot names one already.

    Keys and slots are looked up with one query each, and the runs, keys and slots written
    with one statement each; a key or slot claimed earlier in the same list counts too.
    """
    keys: dict[tuple[str, str], tuple[str, str]] = {}  # (trigger, key) -> (run id, expires at)
    for trigger_id, chunk in _by_trigger([(op.run.trigger_id, op.key) for op in new if op.key is not None]):
        keys.update(
            ((trigger_id, k), (r, e))
            for k, r, e in conn.execute(
                "SELECT key, run_id, expires_at FROM dedupe "
                f"WHERE trigger_id = ? AND key IN ({', '.join('?' * len(chunk))})",
                [trigger_id, *chunk],
            )
        )
    slots: dict[tuple[str, str], str] = {}  # (trigger, nominal) -> run id
    for trigger_id, chunk in _by_trigger([(op.run.trigger_id, op.slot) for op in new if op.slot is not None]):
        slots.update(
            ((trigger_id, n), r)
            for n, r in conn.execute(
                "SELECT nominal, run_id FROM schedule_slots "
                f"WHERE trigger_id = ? AND nominal IN ({', '.join('?' * len(chunk))})",
                [trigger_id, *chunk],
            )
        )
    created, fresh = decide(new, keys, slots)
    for runs in _chunks(fresh, 400):
        conn.execute(
            f"INSERT INTO runs ({RUN_COLUMNS}) VALUES {', '.join([_ROW_MARKS] * len(runs))}",
            [value for op in runs for value in op.row()],
        )
    for keyed in _chunks([op for op in fresh if op.key is not None], 400):
        conn.execute(
            "INSERT OR REPLACE INTO dedupe (trigger_id, key, run_id, expires_at) VALUES "
            + ", ".join(["(?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', ?, ?))"] * len(keyed)),
            [
                v
                for op in keyed
                for v in (op.run.trigger_id, op.key, op.run.id, op.now, f"+{op.dedupe_seconds} seconds")
            ],
        )
    for slotted in _chunks([op for op in fresh if op.slot is not None], 400):
        conn.execute(
            "INSERT INTO schedule_slots (trigger_id, nominal, run_id) VALUES "
            + ", ".join(["(?, ?, ?)"] * len(slotted)),
            [v for op in slotted for v in (op.run.trigger_id, op.slot, op.run.id)],
        )
    for replayed in _chunks([op.run.replay_of for op in fresh if op.run.replay_of is not None], 400):
        conn.execute(f"UPDATE runs SET dead_letter = 0 WHERE id IN ({', '.join('?' * len(replayed))})", replayed)
    superseded = {
        op.run.id: conn.execute(supersede("?"), (op.now, op.run.trigger_id, op.run.keys.debounce, op.run.id)).rowcount
        for op in burst_heads(fresh)
    }
    return [replace(c, superseded=superseded[c.run_id]) if c.run_id in superseded else c for c in created]


def _insert_one(op: NewRun, conn: sqlite3.Connection) -> Created:
    return _insert_runs(conn, [op])[0]


def _by_trigger(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, Sequence[str]]]:
    """(trigger, value) pairs as each trigger's values, in chunks small enough for one query (an index search)."""
    values: dict[str, list[str]] = {}
    for trigger_id, value in pairs:
        values.setdefault(trigger_id, []).append(value)
    return [(trigger_id, chunk) for trigger_id, listed in values.items() for chunk in _chunks(listed, 400)]


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _read_only(path: Path) -> str:
    """A hint for an open that failed because the file system is mounted read-only."""
    with contextlib.suppress(OSError):
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return " (the file system is mounted read-only)"
    return ""


def _settle(outcomes: list[_Outcome]) -> None:
    for future, _, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _select_runs(conn: sqlite3.Connection, tail: str, params: Sequence[Any]) -> list[Run]:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs {tail}", params).fetchall()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    attempt_rows: list[Any] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        attempt_rows += conn.execute(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id IN ({', '.join('?' * len(chunk))}) "
            "ORDER BY run_id, number",
            chunk,
        )
    attempts = attempts_by_run(attempt_rows)
    return [run_from_row(r, attempts) for r in rows]
