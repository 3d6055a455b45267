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
from triggerd.store.rows import count_into, dumps

T = TypeVar("T")


def save_windows(conn: sqlite3.Connection, windows: list[tuple[str, str, str, Any]]) -> None:
    """Replace counting windows inside the caller's transaction; an empty list deletes one."""
    for trigger_id, group, fingerprint, events in windows:
        if events:
            conn.execute(
                "INSERT OR REPLACE INTO event_windows (trigger_id, group_key, fingerprint, events) VALUES (?, ?, ?, ?)",
                (trigger_id, group, fingerprint, dumps(events)),
            )
        else:
            conn.execute("DELETE FROM event_windows WHERE trigger_id = ? AND group_key = ?", (trigger_id, group))


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
                "SELECT fingerprint, events FROM event_windows WHERE trigger_id = ? AND group_key = ?",
                (trigger_id, group),
            ).fetchone()
            stored = json.loads(row[1]) if row is not None and row[0] == fingerprint else []
            window, counted = count_into(stored, entry, horizon, threshold)
            save_windows(conn, [(trigger_id, group, fingerprint, window)])
            return counted

        return await self._write(count)

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
