"""Flow control on SQLite (SPEC 12; the contract is in abc.py): pauses, spend, concurrency groups."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from triggerd.store.abc import GroupState, Spend, TriggerLoad
from triggerd.store.flow import group_queries, key_load_query, spend_query

T = TypeVar("T")
_TOKENS = "COALESCE(json_extract(usage, '$.input_tokens'), 0) + COALESCE(json_extract(usage, '$.output_tokens'), 0)"


class _Io(Protocol):
    def _write(self, operation: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...

    def _read(self, operation: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


class SqliteFlow:
    """The flow-control part of SqliteStore (a mixin on the store's writer and reader threads)."""

    async def key_load(self: _Io, trigger_id: str, concurrency_key: str) -> TriggerLoad:
        def load(conn: sqlite3.Connection) -> TriggerLoad:
            running, pending, oldest = conn.execute(key_load_query("?"), (trigger_id, concurrency_key)).fetchone()
            return TriggerLoad(running or 0, pending or 0, oldest)

        return await self._read(load)

    async def group_state(self: _Io, trigger_id: str, kind: str, key: str, started_since: str) -> GroupState:
        in_flight, starts = group_queries(kind, "?")

        def state(conn: sqlite3.Connection) -> GroupState:
            running, pending, due = conn.execute(in_flight, (trigger_id, key) * 2).fetchone()
            started = tuple(s for (s,) in conn.execute(starts, (trigger_id, key, started_since)))
            return GroupState(running or 0, pending or 0, due, started)

        return await self._read(state)

    async def spend(
        self: _Io, *, trigger_id: str | None = None, agent_id: str | None = None, day_since: str, hour_since: str
    ) -> Spend:
        column, value = ("trigger_id", trigger_id) if trigger_id is not None else ("agent_id", agent_id)

        def spent(conn: sqlite3.Connection) -> Spend:
            query = spend_query(column, _TOKENS, "?")
            tokens, runs = conn.execute(query, (value, day_since, value, hour_since)).fetchone()
            return Spend(int(tokens), int(runs))

        return await self._read(spent)

    async def pause_trigger(self: _Io, trigger_id: str, at: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO paused_triggers (trigger_id, paused_at) VALUES (?, ?)", (trigger_id, at)
            )
        )

    async def resume_trigger(self: _Io, trigger_id: str) -> bool:
        def resume(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM paused_triggers WHERE trigger_id = ?", (trigger_id,)).rowcount > 0

        return await self._write(resume)

    async def paused_triggers(self: _Io) -> dict[str, str]:
        def paused(conn: sqlite3.Connection) -> dict[str, str]:
            return dict(conn.execute("SELECT trigger_id, paused_at FROM paused_triggers"))

        return await self._read(paused)
