"""New runs into PostgreSQL (Store.create_run(s)): keys and slots claimed against other daemons.

An idempotency key and a schedule slot are primary keys, claimed with INSERT ... ON CONFLICT in
sorted order (two daemons' batches cannot deadlock); a claim another daemon's batch won between
the look-up and the insert rolls this attempt back, and it decides again, now seeing the winner.
A new debounced run ends the rest of its burst in the same transaction (SPEC 12).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import psycopg

from triggerd.errors import StoreError
from triggerd.runs import RunStatus
from triggerd.store.abc import Created
from triggerd.store.flow import burst_heads, supersede
from triggerd.store.postgres_claims import notify
from triggerd.store.rows import RUN_COLUMNS, NewRun, decide

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Operation = Callable[[Conn], Awaitable[T]]
_RACE_RETRIES = 5
_RUN_TYPES = (
    "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]",
    "text[]", "text[]", "text[]", "int[]", "bool[]", "text[]", "text[]", "text[]", "text[]",
    "text[]", "text[]", "text[]",
)  # fmt: skip
_INSERT_RUNS = f"INSERT INTO runs ({RUN_COLUMNS}) SELECT * FROM unnest({', '.join(f'%b::{t}' for t in _RUN_TYPES)})"


class _LostRace(Exception):
    """Another daemon's batch claimed a key or slot between this batch's look-up and its insert."""


async def insert_runs(conn: Conn, new: Sequence[NewRun]) -> list[Created]:
    """Insert new runs, unless an unexpired idempotency key or a claimed schedule slot names one already.

    The keys and slots are looked up, decided like SQLite's (store/rows.py), then claimed with
    INSERT ... ON CONFLICT: a claim that another daemon won meanwhile rolls this attempt back
    and decides again, now seeing the winner. Rows go in sorted order, so that two daemons'
    batches lock keys in the same order and cannot deadlock.
    """
    for _ in range(_RACE_RETRIES):
        keyed = sorted({(op.run.trigger_id, op.key) for op in new if op.key is not None})
        slotted = sorted({(op.run.trigger_id, op.slot) for op in new if op.slot is not None})
        keys: dict[tuple[str, str], tuple[str, str]] = {}
        slots: dict[tuple[str, str], str] = {}
        if keyed:
            cur = await conn.execute(
                "SELECT trigger_id, key, run_id, expires_at FROM dedupe "
                "WHERE (trigger_id, key) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
                ([t for t, _ in keyed], [k for _, k in keyed]),
            )
            keys = {(t, k): (r, e) for t, k, r, e in await cur.fetchall()}
        if slotted:
            cur = await conn.execute(
                "SELECT trigger_id, nominal, run_id FROM schedule_slots "
                "WHERE (trigger_id, nominal) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
                ([t for t, _ in slotted], [n for _, n in slotted]),
            )
            slots = {(t, n): r for t, n, r in await cur.fetchall()}
        created, fresh = decide(new, keys, slots)
        try:
            async with conn.transaction():
                await _claim(conn, fresh)
                if fresh:
                    rows = [op.row() for op in fresh]
                    await conn.execute(_INSERT_RUNS, [list(column) for column in zip(*rows, strict=True)])
                if any(op.run.status is RunStatus.PENDING for op in fresh):
                    await notify(conn, "created")
                replays = [op.run.replay_of for op in fresh if op.run.replay_of is not None]
                if replays:
                    await conn.execute("UPDATE runs SET dead_letter = false WHERE id = ANY(%b::text[])", (replays,))
                superseded = await _supersede(conn, fresh)
        except _LostRace:
            continue
        return [replace(c, superseded=superseded[c.run_id]) if c.run_id in superseded else c for c in created]
    raise StoreError("store write failed: other daemons kept claiming the same keys or slots")


async def _supersede(conn: Conn, fresh: Sequence[NewRun]) -> dict[str, int]:
    """End the other pending runs of each new debounced run's burst (abc.create_run), under an advisory
    lock per (trigger, key), taken in sorted order, so that two daemons' bursts end with one run."""
    superseded = {}
    for op in burst_heads(fresh):
        run = op.run
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"debounce/{run.trigger_id}/{run.keys.debounce}",)
        )
        cur = await conn.execute(supersede("%s"), (op.now, run.trigger_id, run.keys.debounce, run.id))
        superseded[run.id] = cur.rowcount
    return superseded


async def _claim(conn: Conn, fresh: Sequence[NewRun]) -> None:
    """Claim the keys and slots of the runs about to be inserted; raise _LostRace if one was taken."""
    keyed = sorted((op for op in fresh if op.key is not None), key=lambda op: (op.run.trigger_id, op.key or ""))
    if keyed:
        cur = await conn.execute(
            "INSERT INTO dedupe (trigger_id, key, run_id, noted_at, expires_at) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
            "ON CONFLICT (trigger_id, key) DO UPDATE SET run_id = EXCLUDED.run_id, "
            "noted_at = EXCLUDED.noted_at, expires_at = EXCLUDED.expires_at "
            "WHERE dedupe.expires_at <= EXCLUDED.noted_at RETURNING run_id",
            (
                [op.run.trigger_id for op in keyed],
                [op.key for op in keyed],
                [op.run.id for op in keyed],
                [op.now for op in keyed],
                [op.expires_at() for op in keyed],
            ),
        )
        if len(await cur.fetchall()) != len(keyed):
            raise _LostRace
    slotted = sorted((op for op in fresh if op.slot is not None), key=lambda op: (op.run.trigger_id, op.slot or ""))
    if slotted:
        cur = await conn.execute(
            "INSERT INTO schedule_slots (trigger_id, nominal, run_id) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING RETURNING run_id",
            ([op.run.trigger_id for op in slotted], [op.slot for op in slotted], [op.run.id for op in slotted]),
        )
        if len(await cur.fetchall()) != len(slotted):
            raise _LostRace


def insert_one(op: NewRun) -> Operation[Created]:
    async def insert(conn: Conn) -> Created:
        return (await insert_runs(conn, [op]))[0]

    return insert
