"""The PostgreSQL side of the store's source methods (SPEC 5.4): seen event ids, dead messages, cursors.

A mixin of PostgresStore, the counterpart of store/sqlite_sources.py, on the tables of the
"broker sources" migration (store/pg_migrations.py); it uses the store's writer (group commit)
and read pool like every method. A redelivery seen by two daemons at once is decided by the
primary key of source_events and of dead_messages, not by either daemon's memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from triggerd.store.abc import DeadMessage
from triggerd.store.rows import clear_crossing, count_into, dumps, forget_cleared, loads, pending, record_crossing

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Operation = Callable[[Conn], Awaitable[T]]


async def save_windows(conn: Conn, windows: list[tuple[str, str, str, Any]]) -> None:
    """Replace counting windows inside the caller's transaction.

    An emptied window keeps its row, as '[]', which load_windows skips: deleted, a daemon waiting
    in count_event for the row's lock would find no row to count into, and its count would race
    a third daemon's new row.
    """
    for trigger_id, group, fingerprint, events in windows:
        await conn.execute(
            "INSERT INTO event_windows (trigger_id, group_key, fingerprint, events) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (trigger_id, group_key) DO UPDATE "
            "SET fingerprint = EXCLUDED.fingerprint, events = EXCLUDED.events",
            (trigger_id, group, fingerprint, dumps(events or [])),
        )


@dataclass(frozen=True)
class CountEvent:
    """count_event's write: a class of its own, so that the writer runs it before the batch's other
    writes, windows in key order (PostgresStore._commit_batch): two batches then take window row
    locks in one order and never wait for each other in a cycle."""

    trigger_id: str
    group: str
    fingerprint: str
    entry: dict[str, Any]
    horizon: str
    threshold: int

    @property
    def key(self) -> tuple[str, str]:
        return self.trigger_id, self.group

    async def __call__(self, conn: Conn) -> list[dict[str, Any]] | None:
        # The row exists (an empty window) before it is locked, so that a daemon counting the
        # first event of a window waits for another doing the same instead of both inserting.
        await conn.execute(
            "INSERT INTO event_windows (trigger_id, group_key, fingerprint, events) VALUES (%s, %s, %s, '[]') "
            "ON CONFLICT (trigger_id, group_key) DO NOTHING",
            (self.trigger_id, self.group, self.fingerprint),
        )
        cur = await conn.execute(
            "SELECT fingerprint, events, fired FROM event_windows WHERE trigger_id = %s AND group_key = %s FOR UPDATE",
            (self.trigger_id, self.group),
        )
        row = await cur.fetchone()
        stored = loads(row[1]) if row is not None and row[0] == self.fingerprint else []
        fired = forget_cleared(loads(row[2]) or [], self.horizon) if row is not None else []
        window, counted = count_into(stored, self.entry, self.horizon, self.threshold, fired)
        crossings = record_crossing(fired, counted)
        await conn.execute(
            "UPDATE event_windows SET fingerprint = %s, events = %s, fired = %s "
            "WHERE trigger_id = %s AND group_key = %s",
            (self.fingerprint, dumps(window), dumps(crossings), self.trigger_id, self.group),
        )
        return counted


@dataclass(frozen=True)
class ClearCrossing:
    """clear_crossing's write: it locks a window row, so the writer orders it with the counts."""

    trigger_id: str
    group: str
    crossing: str

    @property
    def key(self) -> tuple[str, str]:
        return self.trigger_id, self.group

    async def __call__(self, conn: Conn) -> None:
        cur = await conn.execute(
            "SELECT fired FROM event_windows WHERE trigger_id = %s AND group_key = %s FOR UPDATE",
            (self.trigger_id, self.group),
        )
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return
        await conn.execute(
            "UPDATE event_windows SET fired = %s WHERE trigger_id = %s AND group_key = %s",
            (dumps(clear_crossing(loads(row[0]), self.crossing)), self.trigger_id, self.group),
        )


class SourceTables:
    """Store methods for broker sources; PostgresStore provides `_read` and `_write`."""

    async def _read(self, operation: Operation[T]) -> T:
        raise AssertionError("provided by PostgresStore")

    async def _write(self, operation: Operation[T]) -> T:
        raise AssertionError("provided by PostgresStore")

    async def events_seen(self, source_id: str, event_ids: Sequence[str], now: str) -> set[str]:
        async def seen(conn: Conn) -> set[str]:
            cur = await conn.execute(
                "SELECT event_id FROM source_events WHERE source_id = %s AND event_id = ANY(%s) AND expires_at > %s",
                (source_id, list(event_ids), now),
            )
            return {row[0] for row in await cur.fetchall()}

        return await self._read(seen) if event_ids else set()

    async def commit_events(self, events: Sequence[tuple[str, str, str]]) -> None:
        async def commit(conn: Conn) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO source_events (source_id, event_id, expires_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (source_id, event_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                    list(events),
                )

        await self._write(commit)

    async def count_event(
        self, trigger_id: str, group: str, fingerprint: str, entry: dict[str, Any], horizon: str, threshold: int
    ) -> list[dict[str, Any]] | None:
        return await self._write(CountEvent(trigger_id, group, fingerprint, entry, horizon, threshold))

    async def pending_crossings(self) -> list[tuple[str, str, list[dict[str, Any]]]]:
        async def select(conn: Conn) -> list[tuple[str, str, list[dict[str, Any]]]]:
            cur = await conn.execute(
                "SELECT trigger_id, group_key, fired FROM event_windows WHERE fired IS NOT NULL "
                "ORDER BY trigger_id, group_key"
            )
            return [(t, g, crossing) for t, g, fired in await cur.fetchall() for crossing in pending(loads(fired))]

        return await self._read(select)

    async def clear_crossing(self, trigger_id: str, group: str, key: str) -> None:
        await self._write(ClearCrossing(trigger_id, group, key))

    async def add_dead_message(self, message: DeadMessage) -> None:
        async def add(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO dead_messages (id, source_id, reason, payload, headers, broker_id, received_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    message.id,
                    message.source_id,
                    message.reason,
                    message.payload,
                    dumps(dict(message.headers)),
                    message.broker_id,
                    message.received_at,
                ),
            )

        await self._write(add)

    async def dead_messages(self, limit: int = 100, source_id: str | None = None) -> list[DeadMessage]:
        where, params = ("WHERE source_id = %s", (source_id,)) if source_id is not None else ("", ())

        async def select(conn: Conn) -> list[DeadMessage]:
            cur = await conn.execute(
                "SELECT id, source_id, reason, payload, headers, broker_id, received_at FROM dead_messages "
                f"{where} ORDER BY received_at DESC, id DESC LIMIT %s",
                (*params, limit),
            )
            rows = await cur.fetchall()
            return [DeadMessage(i, s, r, bytes(p), loads(h) if h else {}, b, at) for i, s, r, p, h, b, at in rows]

        return await self._read(select)

    async def source_cursor(self, source_id: str) -> str | None:
        async def cursor(conn: Conn) -> str | None:
            cur = await conn.execute("SELECT cursor FROM source_cursors WHERE source_id = %s", (source_id,))
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        return await self._read(cursor)

    async def save_source_cursor(self, source_id: str, cursor: str, at: str) -> None:
        async def save(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO source_cursors (source_id, cursor, saved_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (source_id) DO UPDATE SET cursor = EXCLUDED.cursor, saved_at = EXCLUDED.saved_at",
                (source_id, cursor, at),
            )

        await self._write(save)
