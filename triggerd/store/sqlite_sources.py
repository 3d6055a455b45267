"""The SQLite side of the store's source methods (SPEC 5.4): seen event ids, dead messages, cursors.

A mixin of SqliteStore, kept apart because it is a separate concern with tables of its own
(migration "broker sources"); it uses the store's single writer and reader like every method.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from triggerd.store.abc import DeadMessage
from triggerd.store.rows import clear_crossing, count_into, dumps, forget_cleared, loads, pending, record_crossing

T = TypeVar("T")


def save_windows(conn: sqlite3.Connection, windows: list[tuple[str, str, str, Any]]) -> None:
    """Replace counting windows inside the caller's transaction; an empty list deletes one,
    unless it keeps pending crossings (those stay until clear_crossing)."""
    for trigger_id, group, fingerprint, events in windows:
        if events:
            conn.execute(
                "INSERT INTO event_windows (trigger_id, group_key, fingerprint, events) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (trigger_id, group_key) DO UPDATE "
                "SET fingerprint = excluded.fingerprint, events = excluded.events",
                (trigger_id, group, fingerprint, dumps(events)),
            )
        else:
            key = (trigger_id, group)
            conn.execute("DELETE FROM event_windows WHERE trigger_id = ? AND group_key = ? AND fired IS NULL", key)
            conn.execute("UPDATE event_windows SET events = '[]' WHERE trigger_id = ? AND group_key = ?", key)


class SourceTables:
    """Store methods for broker sources; SqliteStore provides `_read` and `_write`."""

    async def _read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        raise AssertionError("provided by SqliteStore")

    async def _write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        raise AssertionError("provided by SqliteStore")

    async def events_seen(self, source_id: str, event_ids: Sequence[str], now: str) -> set[str]:
        def seen(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(event_ids), 400):  # under SQLite's limit of bound parameters
                chunk = event_ids[start : start + 400]
                found.update(
                    row[0]
                    for row in conn.execute(
                        "SELECT event_id FROM source_events WHERE source_id = ? AND expires_at > ? "
                        f"AND event_id IN ({', '.join('?' * len(chunk))})",
                        (source_id, now, *chunk),
                    )
                )
            return found

        return await self._read(seen) if event_ids else set()

    async def commit_events(self, events: Sequence[tuple[str, str, str]]) -> None:
        def commit(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO source_events (source_id, event_id, expires_at) VALUES (?, ?, ?)",
                events,
            )

        await self._write(commit)

    async def count_event(
        self, trigger_id: str, group: str, fingerprint: str, entry: dict[str, Any], horizon: str, threshold: int
    ) -> list[dict[str, Any]] | None:
        # The writer's transaction began with BEGIN IMMEDIATE: no other process writes this
        # database until it commits, so the read and the write below are one step for all daemons.
        def count(conn: sqlite3.Connection) -> list[dict[str, Any]] | None:
            row = conn.execute(
                "SELECT fingerprint, events, fired FROM event_windows WHERE trigger_id = ? AND group_key = ?",
                (trigger_id, group),
            ).fetchone()
            stored = json.loads(row[1]) if row is not None and row[0] == fingerprint else []
            fired = forget_cleared(loads(row[2]) or [], horizon) if row is not None else []
            window, counted = count_into(stored, entry, horizon, threshold, fired)
            conn.execute(
                "INSERT INTO event_windows (trigger_id, group_key, fingerprint, events, fired) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (trigger_id, group_key) DO UPDATE "
                "SET fingerprint = excluded.fingerprint, events = excluded.events, fired = excluded.fired",
                (trigger_id, group, fingerprint, dumps(window), dumps(record_crossing(fired, counted))),
            )
            return counted

        return await self._write(count)

    async def pending_crossings(self) -> list[tuple[str, str, list[dict[str, Any]]]]:
        def select(conn: sqlite3.Connection) -> list[tuple[str, str, list[dict[str, Any]]]]:
            rows = conn.execute(
                "SELECT trigger_id, group_key, fired FROM event_windows WHERE fired IS NOT NULL "
                "ORDER BY trigger_id, group_key"
            )
            return [(t, g, crossing) for t, g, fired in rows for crossing in pending(json.loads(fired))]

        return await self._read(select)

    async def clear_crossing(self, trigger_id: str, group: str, key: str) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            where = (trigger_id, group)
            row = conn.execute(
                "SELECT fired FROM event_windows WHERE trigger_id = ? AND group_key = ?", where
            ).fetchone()
            if row is None or row[0] is None:
                return
            conn.execute(
                "UPDATE event_windows SET fired = ? WHERE trigger_id = ? AND group_key = ?",
                (dumps(clear_crossing(json.loads(row[0]), key)), *where),
            )

        await self._write(clear)

    async def add_dead_message(self, message: DeadMessage) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO dead_messages (id, source_id, reason, payload, headers, broker_id, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        )

    async def dead_messages(self, limit: int = 100, source_id: str | None = None) -> list[DeadMessage]:
        where, params = ("WHERE source_id = ?", (source_id,)) if source_id is not None else ("", ())

        def select(conn: sqlite3.Connection) -> list[DeadMessage]:
            rows = conn.execute(
                "SELECT id, source_id, reason, payload, headers, broker_id, received_at FROM dead_messages "
                f"{where} ORDER BY received_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
            return [DeadMessage(i, s, r, bytes(p), json.loads(h) if h else {}, b, at) for i, s, r, p, h, b, at in rows]

        return await self._read(select)

    async def source_cursor(self, source_id: str) -> str | None:
        row = await self._read(
            lambda c: c.execute("SELECT cursor FROM source_cursors WHERE source_id = ?", (source_id,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def save_source_cursor(self, source_id: str, cursor: str, at: str) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO source_cursors (source_id, cursor, saved_at) VALUES (?, ?, ?)",
                (source_id, cursor, at),
            )
        )
