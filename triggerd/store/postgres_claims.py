"""Claims, leases, instances and cancel requests on PostgreSQL (SPEC 10; the contract is in abc.py).

A claim runs on the store's writer connection, in a savepoint of its batch's transaction, and
takes `pg_advisory_xact_lock(CLAIM_LOCK)` first: `FOR UPDATE SKIP LOCKED` alone keeps two
claimers off the same row, but not off the same *limit* (two claims could each count no running
run of a `max_concurrent: 1` trigger and claim two of its runs). The lock is held to the batch's
commit, so the next claimer, in READ COMMITTED, counts the runs this one claimed. SKIP LOCKED
then only keeps a claim from waiting on a row a cancel or a late outcome holds.

The writer runs a batch's claims before its other writes (postgres.py), so a transaction never
holds row locks while it waits for the claim lock: the lock order is always lock, then rows.

Counts of runs in flight (trigger_loads, the poll's queue depth) are read from `trigger_load`,
kept by triggers on `runs` as on SQLite, but with one row per trigger and writer connection,
summed when read: a single counter row per trigger would be a row lock every create, claim and
end of the trigger's runs takes and holds to its batch's commit, serializing the daemons' batches
on it and letting two batches that touch two triggers in opposite orders deadlock. Counting the
partial indexes instead costs a walk of the queue per read (docs/scale-out.md has the figures).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import psycopg

from triggerd.runs import ProcessGroup, Run, RunStatus
from triggerd.store.abc import Claims, Instance, Interrupted, Loaded, Renewal, TriggerLoad
from triggerd.store.flow import RUNNING_BY_KEY, Gate, starts_query
from triggerd.store.rows import INSTANCE_COLUMNS, instance_from_row, instance_row

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# pg_advisory_xact_lock key of claims ("trgc"); migrations use "trgd" (pg_migrations.ADVISORY_LOCK).
CLAIM_LOCK = 0x74726763
CHANNEL = "triggerd_runs"  # NOTIFY channel of wake-ups: a run to claim, a run ended, a cancel asked
_PAGE = 200
_RELEASE = "claimed_by = NULL, lease_until = NULL, cancel_requested = NULL"


class Claim:
    """A claim_runs queued to the writer: marked, so that the writer runs it before the batch's other writes."""

    __slots__ = ("operation",)

    def __init__(self, operation: Callable[[Conn], Awaitable[Claims]]) -> None:
        self.operation = operation

    async def __call__(self, conn: Conn) -> Claims:
        return await self.operation(conn)


class _Io(Protocol):
    def _write(self, operation: Callable[[Conn], Awaitable[T]]) -> Awaitable[T]: ...

    def _read(self, operation: Callable[[Conn], Awaitable[T]]) -> Awaitable[T]: ...


async def notify(conn: Conn, what: str) -> None:
    """Wake the daemons listening (delivered at commit; discarded with a rolled-back savepoint)."""
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, what))


class PostgresClaims:
    """The claim part of PostgresStore (a mixin: it runs on the store's writer and read pool)."""

    async def register_instance(self: _Io, instance: Instance) -> None:
        async def register(conn: Conn) -> None:
            await conn.execute(
                f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET "
                "address = EXCLUDED.address, started_at = EXCLUDED.started_at, fingerprint = EXCLUDED.fingerprint, "
                "last_seen = EXCLUDED.last_seen, pid = EXCLUDED.pid, pid_start_ticks = EXCLUDED.pid_start_ticks, "
                "boot_id = EXCLUDED.boot_id",
                instance_row(instance),
            )

        await self._write(register)

    async def instances(self: _Io) -> list[Instance]:
        async def select(conn: Conn) -> list[Instance]:
            cur = await conn.execute(f"SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY id")
            return [instance_from_row(row) for row in await cur.fetchall()]

        return await self._read(select)

    async def expire_claims(self: _Io, instance_ids: Sequence[str], at: str) -> int:
        ids = list(instance_ids)

        async def expire(conn: Conn) -> int:
            if not ids:
                return 0
            cur = await conn.execute(
                "UPDATE runs SET lease_until = %s WHERE status = 'running' AND claimed_by = ANY(%s::text[])", (at, ids)
            )
            if cur.rowcount:
                await notify(conn, "expired")
            return int(cur.rowcount)

        return await self._write(expire)

    async def claim_runs(
        self: _Io, instance: str, now: str, lease_until: str, limit: int, loaded: Loaded, *, count_pending: bool = False
    ) -> Claims:
        claim = Claim(lambda conn: _claim(conn, instance, now, lease_until, limit, loaded, count_pending))
        return await self._write(claim)

    async def renew_leases(self: _Io, instance: str, run_ids: Sequence[str], now: str, lease_until: str) -> Renewal:
        ids = list(run_ids)

        async def renew(conn: Conn) -> Renewal:
            await conn.execute("UPDATE instances SET last_seen = %s WHERE id = %s", (now, instance))
            if not ids:
                return Renewal(frozenset(), {})
            cur = await conn.execute(
                "UPDATE runs SET lease_until = %s WHERE claimed_by = %s AND status = 'running' "
                "AND id = ANY(%s::text[]) RETURNING id, cancel_requested",
                (lease_until, instance, ids),
            )
            rows = await cur.fetchall()
            return Renewal(frozenset(r for r, _ in rows), {r: reason for r, reason in rows if reason is not None})

        return await self._write(renew)

    async def request_cancel(self: _Io, run_id: str, reason: str, at: str) -> RunStatus | None:
        async def cancel(conn: Conn) -> RunStatus | None:
            row = await (await conn.execute("SELECT status FROM runs WHERE id = %s FOR UPDATE", (run_id,))).fetchone()
            if row is None:
                return None
            status = RunStatus(row[0])
            if status is RunStatus.PENDING:
                await conn.execute(
                    "UPDATE runs SET status = 'cancelled', finished_at = %s, reason = %s, next_attempt_at = NULL "
                    "WHERE id = %s",
                    (at, reason, run_id),
                )
            if status is RunStatus.RUNNING:
                await conn.execute(
                    "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, %s) WHERE id = %s", (reason, run_id)
                )
                await notify(conn, "cancel")  # the holder renews at once instead of at its next renewal
            return status

        return await self._write(cancel)

    async def trigger_loads(self: _Io, trigger_ids: Sequence[str]) -> dict[str, TriggerLoad]:
        ids = list(dict.fromkeys(trigger_ids))

        async def load(conn: Conn) -> dict[str, TriggerLoad]:
            # A few rows per trigger (one per writer connection), and the triggers' running runs
            # only (bounded by their max_concurrent) for the oldest: never a walk of a queue.
            cur = await conn.execute(
                "SELECT trigger_id, sum(running), sum(pending) FROM trigger_load WHERE trigger_id = ANY(%s::text[]) "
                "GROUP BY trigger_id",
                (ids,),
            )
            counts = {t: (int(r), int(p)) for t, r, p in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT trigger_id, min(id) FROM runs WHERE status = 'running' AND trigger_id = ANY(%s::text[]) "
                "GROUP BY trigger_id",
                (ids,),
            )
            oldest: dict[str, str] = dict(await cur.fetchall())
            return {t: TriggerLoad(*counts.get(t, (0, 0)), oldest.get(t)) for t in ids}

        return await self._read(load)


async def _claim(
    conn: Conn, instance: str, now: str, lease_until: str, limit: int, loaded: Loaded, count_pending: bool
) -> Claims:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
    interrupted = await _take_over(conn, now, loaded)
    claimed: list[str] = []
    if limit > 0:
        by_trigger: Counter[str] = Counter()
        by_agent: Counter[str] = Counter()
        cur = await conn.execute(
            "SELECT trigger_id, agent_id, count(*) FROM runs WHERE status = 'running' GROUP BY trigger_id, agent_id"
        )
        for trigger_id, agent_id, count in await cur.fetchall():
            by_trigger[trigger_id] += count
            by_agent[agent_id] += count
        gate = Gate(loaded, now)
        if loaded.flow:
            gate.count_running(await (await conn.execute(RUNNING_BY_KEY)).fetchall())
            throttled = gate.throttled_triggers
            if throttled:
                cur = await conn.execute(starts_query("%s", len(throttled)), (gate.since(), *throttled))
                gate.count_starts(await cur.fetchall())
        claimed = await _choose(conn, now, limit, loaded, by_trigger, by_agent, gate)
        if gate.throttled:
            await conn.execute(
                "UPDATE runs SET reason = 'throttled', next_attempt_at = t.frees FROM "
                "unnest(%s::text[], %s::text[]) AS t (id, frees) WHERE runs.id = t.id",
                ([r for r, _ in gate.throttled], [f for _, f in gate.throttled]),
            )
        if claimed:
            await conn.execute(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, %s), next_attempt_at = NULL, "
                "claimed_by = %s, lease_until = %s, cancel_requested = NULL, reason = NULL WHERE id = ANY(%s::text[])",
                (now, instance, lease_until, claimed),
            )
            await conn.execute(
                "INSERT INTO attempts (run_id, number, started_at, status) "
                "SELECT c.id, COALESCE((SELECT max(number) FROM attempts a WHERE a.run_id = c.id), 0) + 1, %s, "
                "'running' FROM unnest(%s::text[]) AS c (id)",
                (now, claimed),
            )
    from triggerd.store.postgres import _select_runs  # the row conversion lives with the store

    runs: list[Run] = await _select_runs(conn, "WHERE id = ANY(%s::text[]) ORDER BY id", (claimed,)) if claimed else []
    row = await (
        await conn.execute(
            "SELECT min(next_attempt_at) FROM runs WHERE status = 'pending' AND next_attempt_at IS NOT NULL "
            "AND next_attempt_at > %s",
            (now,),
        )
    ).fetchone()
    next_due = row[0] if row is not None else None
    pending = None
    if count_pending:
        counted = await (await conn.execute("SELECT COALESCE(sum(pending), 0) FROM trigger_load")).fetchone()
        pending = int(counted[0]) if counted is not None else 0
    return Claims(runs, interrupted, next_due, pending)


async def _choose(
    conn: Conn, now: str, limit: int, loaded: Loaded, by_trigger: Counter[str], by_agent: Counter[str], gate: Gate
) -> list[str]:
    """Up to `limit` due pending runs, oldest first, within the trigger and agent limits (counts updated).

    Pages through the pending runs of loaded triggers and agents in id order, the triggers and
    agents at their limit excluded by the statement (recomputed for each page, as this claim fills
    them), so a long queue held back by a limit is passed over by PostgreSQL, not Python.
    """
    triggers = list(loaded.triggers)
    agents = list(loaded.agents)
    chosen: list[str] = []
    after = ""
    while len(chosen) < limit:
        full_triggers = [
            t
            for t, n in by_trigger.items()
            if t in loaded.triggers and n >= loaded.triggers[t][0] and not gate.keyed(t)
        ]
        full_agents = [a for a, n in by_agent.items() if (cap := loaded.agents.get(a)) is not None and n >= cap]
        if len(full_triggers) >= len(triggers) or len(full_agents) >= len(agents):
            break  # nothing this daemon loads may start
        cur = await conn.execute(
            "SELECT id, trigger_id, agent_id, concurrency_key, throttle_key FROM runs "
            "WHERE status = 'pending' AND id > %s "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= %s) "
            "AND trigger_id = ANY(%s::text[]) AND agent_id = ANY(%s::text[]) "
            "AND trigger_id <> ALL(%s::text[]) AND agent_id <> ALL(%s::text[]) "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (after, now, triggers, agents, full_triggers, full_agents, _PAGE),
        )
        page = await cur.fetchall()
        for run_id, trigger_id, agent_id, concurrency_key, throttle_key in page:
            after = run_id
            if by_trigger[trigger_id] >= loaded.triggers[trigger_id][0] and not gate.keyed(trigger_id):
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
        if len(page) < _PAGE:
            break
    return chosen


async def _take_over(conn: Conn, now: str, loaded: Loaded) -> list[Interrupted]:
    """End the open attempts of loaded triggers' runs whose lease expired, as interrupted (see claim_runs)."""
    cur = await conn.execute(
        "SELECT id, trigger_id, cancel_requested FROM runs WHERE status = 'running' "
        "AND (lease_until IS NULL OR lease_until <= %s) AND trigger_id = ANY(%s::text[]) "
        "ORDER BY id FOR UPDATE SKIP LOCKED",
        (now, list(loaded.triggers)),
    )
    interrupted = []
    for run_id, trigger_id, cancel in await cur.fetchall():
        max_attempts = loaded.triggers[trigger_id][1]
        open_attempt = await (
            await conn.execute(
                "SELECT number, pgid, pgid_start_ticks, boot_id FROM attempts WHERE run_id = %s "
                "AND finished_at IS NULL ORDER BY number DESC LIMIT 1",
                (run_id,),
            )
        ).fetchone()
        counted = await (
            await conn.execute(
                "SELECT count(*) FROM attempts WHERE run_id = %s AND status IN ('failed', 'timed_out')", (run_id,)
            )
        ).fetchone()
        failures = counted[0] if counted is not None else 0
        if open_attempt is None:  # claimed, but no attempt recorded: nothing was lost
            await conn.execute(f"UPDATE runs SET status = 'pending', {_RELEASE} WHERE id = %s", (run_id,))
            continue  # (a cancel request on it is dropped with the claim, as on SQLite)
        number, pgid, ticks, boot = open_attempt
        await conn.execute(
            "UPDATE attempts SET finished_at = %s, status = 'failed', error = 'interrupted' "
            "WHERE run_id = %s AND number = %s",
            (now, run_id, number),
        )
        retried = cancel is None and failures + 1 < max_attempts
        if cancel is not None:  # its holder died before it could stop it: the cancel stands
            await conn.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = %s, reason = %s, next_attempt_at = NULL, "
                f"{_RELEASE} WHERE id = %s",
                (now, cancel, run_id),
            )
        elif retried:
            await conn.execute(
                "UPDATE runs SET status = 'pending', error = 'interrupted', next_attempt_at = NULL, "
                f"{_RELEASE} WHERE id = %s",
                (run_id,),
            )
        else:
            await conn.execute(
                "UPDATE runs SET status = 'failed', finished_at = %s, error = 'interrupted', dead_letter = true, "
                f"next_attempt_at = NULL, {_RELEASE} WHERE id = %s",
                (now, run_id),
            )
        process = ProcessGroup(pgid, ticks, boot) if pgid is not None else None
        interrupted.append(Interrupted(run_id, number, process, retried))
    if interrupted:
        await notify(conn, "taken")  # retried runs are pending again: any daemon may claim them
    return interrupted


async def fold_loads(conn: Conn) -> None:
    """Fold the trigger_load rows of writer connections that are gone into this connection's own (prune)."""
    await conn.execute(
        "WITH gone AS (DELETE FROM trigger_load WHERE backend <> pg_backend_pid() "
        "AND backend NOT IN (SELECT pid FROM pg_stat_activity) RETURNING trigger_id, running, pending) "
        "INSERT INTO trigger_load (trigger_id, backend, running, pending) "
        "SELECT trigger_id, pg_backend_pid(), sum(running), sum(pending) FROM gone GROUP BY trigger_id "
        "ON CONFLICT (trigger_id, backend) DO UPDATE "
        "SET running = trigger_load.running + EXCLUDED.running, pending = trigger_load.pending + EXCLUDED.pending"
    )
    await conn.execute("DELETE FROM trigger_load WHERE backend = pg_backend_pid() AND running = 0 AND pending = 0")
