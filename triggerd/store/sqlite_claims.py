"""Claims, leases, instances and cancel requests on SQLite (SPEC 10; the contract is in abc.py).

A claim is one write of the store's writer thread, so it runs inside the writer's
`BEGIN IMMEDIATE` transaction: it holds the database's write lock from its first read, and
daemons of several processes sharing the file claim one after the other, each counting the
runs the others have claimed. Nothing is answered before that transaction commits.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from triggerd.runs import ProcessGroup, RunStatus
from triggerd.store.abc import Claims, Instance, Interrupted, Loaded, Renewal, TriggerLoad
from triggerd.store.flow import RUNNING_BY_KEY, Gate, starts_query
from triggerd.store.rows import INSTANCE_COLUMNS, instance_from_row, instance_row

T = TypeVar("T")
_CHUNK = 400


class _Io(Protocol):
    def _write(self, operation: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...

    def _write_patiently(self, operation: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...

    def _read(self, operation: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


class SqliteClaims:
    """The claim part of SqliteStore (a mixin: it runs on the store's writer and reader threads)."""

    async def register_instance(self: _Io, instance: Instance) -> None:
        def register(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO instances ({INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                instance_row(instance),
            )

        await self._write(register)

    async def instances(self: _Io) -> list[Instance]:
        def select(conn: sqlite3.Connection) -> list[Instance]:
            rows = conn.execute(f"SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY id")
            return [instance_from_row(row) for row in rows]

        return await self._read(select)

    async def expire_claims(self: _Io, instance_ids: Sequence[str], at: str) -> int:
        ids = list(instance_ids)

        def expire(conn: sqlite3.Connection) -> int:
            if not ids:
                return 0
            return int(
                conn.execute(
                    f"UPDATE runs SET lease_until = ? WHERE status = 'running' AND claimed_by IN ({_marks(ids)})",
                    (at, *ids),
                ).rowcount
            )

        return await self._write(expire)

    async def claim_runs(
        self: _Io, instance: str, now: str, lease_until: str, limit: int, loaded: Loaded, *, count_pending: bool = False
    ) -> Claims:
        return await self._write_patiently(
            lambda conn: _claim(conn, instance, now, lease_until, limit, loaded, count_pending)
        )

    async def renew_leases(self: _Io, instance: str, run_ids: Sequence[str], now: str, lease_until: str) -> Renewal:
        ids = list(run_ids)

        def renew(conn: sqlite3.Connection) -> Renewal:
            conn.execute("UPDATE instances SET last_seen = ? WHERE id = ?", (now, instance))
            held: set[str] = set()
            cancel: dict[str, str] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                where = f"claimed_by = ? AND status = 'running' AND id IN ({_marks(chunk)})"
                conn.execute(f"UPDATE runs SET lease_until = ? WHERE {where}", (lease_until, instance, *chunk))
                for run_id, reason in conn.execute(
                    f"SELECT id, cancel_requested FROM runs WHERE {where}", (instance, *chunk)
                ):
                    held.add(run_id)
                    if reason is not None:
                        cancel[run_id] = reason
            return Renewal(frozenset(held), cancel)

        return await self._write_patiently(renew)

    async def request_cancel(self: _Io, run_id: str, reason: str, at: str) -> RunStatus | None:
        def cancel(conn: sqlite3.Connection) -> RunStatus | None:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            status = RunStatus(row[0])
            if status is RunStatus.PENDING:
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', finished_at = ?, reason = ?, next_attempt_at = NULL "
                    "WHERE id = ?",
                    (at, reason, run_id),
                )
            if status is RunStatus.RUNNING:
                conn.execute(
                    "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, ?) WHERE id = ?", (reason, run_id)
                )
            return status

        return await self._write(cancel)

    async def trigger_loads(self: _Io, trigger_ids: Sequence[str]) -> dict[str, TriggerLoad]:
        ids = list(dict.fromkeys(trigger_ids))

        def load(conn: sqlite3.Connection) -> dict[str, TriggerLoad]:
            # One row per trigger kept by triggers on runs (migration 6), and the triggers' running
            # runs only (bounded by their max_concurrent) for the oldest: never a walk of a queue.
            counts: dict[str, tuple[int, int]] = {}
            oldest: dict[str, str] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                counts.update(
                    (t, (r, p))
                    for t, r, p in conn.execute(
                        f"SELECT trigger_id, running, pending FROM trigger_load WHERE trigger_id IN ({_marks(chunk)})",
                        chunk,
                    )
                )
                oldest.update(
                    conn.execute(
                        "SELECT trigger_id, min(id) FROM runs INDEXED BY runs_running WHERE status = 'running' "
                        f"AND trigger_id IN ({_marks(chunk)}) GROUP BY trigger_id",
                        chunk,
                    )
                )
            return {t: TriggerLoad(*counts.get(t, (0, 0)), oldest.get(t)) for t in ids}

        return await self._read(load)


def _claim(
    conn: sqlite3.Connection, instance: str, now: str, lease_until: str, limit: int, loaded: Loaded, count_pending: bool
) -> Claims:
    interrupted = _take_over(conn, now, loaded)
    claimed: list[str] = []
    if limit > 0:
        by_trigger: Counter[str] = Counter()
        by_agent: Counter[str] = Counter()
        for trigger_id, agent_id, count in conn.execute(
            "SELECT trigger_id, agent_id, count(*) FROM runs WHERE status = 'running' GROUP BY trigger_id, agent_id"
        ):
            by_trigger[trigger_id] += count
            by_agent[agent_id] += count
        gate = Gate(loaded, now)
        if loaded.flow:
            gate.count_running(conn.execute(RUNNING_BY_KEY))
            throttled = gate.throttled_triggers
            if throttled:
                gate.count_starts(conn.execute(starts_query("?", len(throttled)), (gate.since(), *throttled)))
        claimed = _choose(conn, now, limit, loaded, by_trigger, by_agent, gate)
        for run_id, frees in gate.throttled:
            conn.execute(
                "UPDATE runs SET reason = 'throttled', next_attempt_at = ? WHERE id = ?",
                (frees, run_id),
            )
        for run_id in claimed:
            conn.execute(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?), next_attempt_at = NULL, "
                "claimed_by = ?, lease_until = ?, cancel_requested = NULL, reason = NULL WHERE id = ?",
                (now, instance, lease_until, run_id),
            )
            conn.execute(
                "INSERT INTO attempts (run_id, number, started_at, status) VALUES "
                "(?, (SELECT COALESCE(max(number), 0) + 1 FROM attempts WHERE run_id = ?), ?, 'running')",
                (run_id, run_id, now),
            )
    from triggerd.store.sqlite import _select_runs  # the row conversion lives with the store

    runs = []
    for i in range(0, len(claimed), _CHUNK):
        chunk = claimed[i : i + _CHUNK]
        runs.extend(_select_runs(conn, f"WHERE id IN ({_marks(chunk)}) ORDER BY id", chunk))
    (next_due,) = conn.execute(
        "SELECT min(next_attempt_at) FROM runs WHERE status = 'pending' AND next_attempt_at IS NOT NULL "
        "AND next_attempt_at > ?",
        (now,),
    ).fetchone()
    pending = None
    if count_pending:  # a row per trigger: with thousands of triggers, not at every claim
        (pending,) = conn.execute("SELECT COALESCE(sum(pending), 0) FROM trigger_load").fetchone()
    return Claims(runs, interrupted, next_due, pending)


def _choose(
    conn: sqlite3.Connection,
    now: str,
    limit: int,
    loaded: Loaded,
    by_trigger: Counter[str],
    by_agent: Counter[str],
    gate: Gate,
) -> list[str]:
    """Up to `limit` due pending runs, oldest first, within the trigger and agent limits (counts updated).

    One walk of the pending runs in id order, in which SQLite itself passes over the runs of
    triggers and agents already at their limit (few: no more than the runs running), so a long
    queue held back by a limit costs C, not Python, and a burst costs what it claims.
    """
    full_triggers = [
        t for t, n in by_trigger.items() if t in loaded.triggers and n >= loaded.triggers[t][0] and not gate.keyed(t)
    ]
    full_agents = [a for a, n in by_agent.items() if (cap := loaded.agents.get(a)) is not None and n >= cap]
    if len(full_triggers) >= len(loaded.triggers) or len(full_agents) >= len(loaded.agents):
        return []  # nothing this daemon loads may start
    chosen: list[str] = []
    walk = conn.execute(
        "SELECT id, trigger_id, agent_id, concurrency_key, throttle_key FROM runs INDEXED BY runs_queue "
        "WHERE status = 'pending' "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
        f"AND trigger_id NOT IN ({_marks(full_triggers)}) AND agent_id NOT IN ({_marks(full_agents)}) ORDER BY id",
        (now, *full_triggers, *full_agents),
    )
    for run_id, trigger_id, agent_id, concurrency_key, throttle_key in walk:
        limits = loaded.triggers.get(trigger_id)
        if limits is None or agent_id not in loaded.agents:
            continue  # not loaded here
        if by_trigger[trigger_id] >= limits[0] and not gate.keyed(trigger_id):
            continue  # filled by this claim
        cap = loaded.agents[agent_id]
        if cap is not None and by_agent[agent_id] >= cap:
            continue
        if not gate.admit(run_id, trigger_id, concurrency_key, throttle_key):
            continue  # its concurrency group is full, or its throttle window
        by_trigger[trigger_id] += 1
        by_agent[agent_id] += 1
        chosen.append(run_id)
        if len(chosen) >= limit:
            break
    return chosen


def _take_over(conn: sqlite3.Connection, now: str, loaded: Loaded) -> list[Interrupted]:
    """End the open attempts of loaded triggers' runs whose lease expired, as interrupted (see claim_runs)."""
    expired = conn.execute(
        "SELECT id, trigger_id, cancel_requested FROM runs WHERE status = 'running' "
        "AND (lease_until IS NULL OR lease_until <= ?)",
        (now,),
    ).fetchall()
    interrupted = []
    for run_id, trigger_id, cancel in expired:
        limits = loaded.triggers.get(trigger_id)
        if limits is None:
            continue  # left for a daemon that knows its retry policy
        open_attempt = conn.execute(
            "SELECT number, pgid, pgid_start_ticks, boot_id FROM attempts WHERE run_id = ? AND finished_at IS NULL "
            "ORDER BY number DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        failures = conn.execute(
            "SELECT count(*) FROM attempts WHERE run_id = ? AND status IN ('failed', 'timed_out')", (run_id,)
        ).fetchone()[0]
        release = "claimed_by = NULL, lease_until = NULL, cancel_requested = NULL"
        if open_attempt is None:  # claimed, but no attempt recorded: nothing was lost
            conn.execute(f"UPDATE runs SET status = 'pending', {release} WHERE id = ?", (run_id,))
            continue  # (a cancel request on it is dropped with the claim: rare enough, and it can be asked again)
        number, pgid, ticks, boot = open_attempt
        conn.execute(
            "UPDATE attempts SET finished_at = ?, status = 'failed', error = 'interrupted' "
            "WHERE run_id = ? AND number = ?",
            (now, run_id, number),
        )
        retried = cancel is None and failures + 1 < limits[1]
        if cancel is not None:  # its holder died before it could stop it: the cancel stands
            conn.execute(
                f"UPDATE runs SET status = 'cancelled', finished_at = ?, reason = ?, next_attempt_at = NULL, {release} "
                "WHERE id = ?",
                (now, cancel, run_id),
            )
        elif retried:
            conn.execute(
                f"UPDATE runs SET status = 'pending', error = 'interrupted', next_attempt_at = NULL, {release} "
                "WHERE id = ?",
                (run_id,),
            )
        else:
            conn.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?, error = 'interrupted', dead_letter = 1, "
                f"next_attempt_at = NULL, {release} WHERE id = ?",
                (now, run_id),
            )
        process = ProcessGroup(pgid, ticks, boot) if pgid is not None else None
        interrupted.append(Interrupted(run_id, number, process, retried))
    return interrupted
