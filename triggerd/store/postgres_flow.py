"""Flow control on PostgreSQL (SPEC 12; the contract is in abc.py): pauses, spend, concurrency groups."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import psycopg

from triggerd.store.abc import GroupState, Spend, TriggerLoad
from triggerd.store.flow import group_queries, key_load_query, spend_query
from triggerd.store.postgres_claims import notify

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_TOKENS = (
    "COALESCE((usage::jsonb ->> 'input_tokens')::bigint, 0) + COALESCE((usage::jsonb ->> 'output_tokens')::bigint, 0)"
)


class _Io(Protocol):
    def _write(self, operation: Callable[[Conn], Awaitable[T]]) -> Awaitable[T]: ...

    def _read(self, operation: Callable[[Conn], Awaitable[T]]) -> Awaitable[T]: ...


class PostgresFlow:
    """The flow-control part of PostgresStore (a mixin on the store's writer and read pool)."""

    async def key_load(self: _Io, trigger_id: str, concurrency_key: str) -> TriggerLoad:
        async def load(conn: Conn) -> TriggerLoad:
            row = await (await conn.execute(key_load_query("%s"), (trigger_id, concurrency_key))).fetchone()
            assert row is not None  # an aggregate always answers a row
            return TriggerLoad(int(row[0]), int(row[1]), row[2])

        return await self._read(load)

    async def group_state(self: _Io, trigger_id: str, kind: str, key: str, started_since: str) -> GroupState:
        in_flight, starts = group_queries(kind, "%s")

        async def state(conn: Conn) -> GroupState:
            row = await (await conn.execute(in_flight, (trigger_id, key) * 2)).fetchone()
            assert row is not None
            cur = await conn.execute(starts, (trigger_id, key, started_since))
            return GroupState(int(row[0]), int(row[1]), row[2], tuple(s for (s,) in await cur.fetchall()))

        return await self._read(state)

    async def spend(
        self: _Io, *, trigger_id: str | None = None, agent_id: str | None = None, day_since: str, hour_since: str
    ) -> Spend:
        column, value = ("trigger_id", trigger_id) if trigger_id is not None else ("agent_id", agent_id)

        async def spent(conn: Conn) -> Spend:
            query = spend_query(column, _TOKENS, "%s")
            row = await (await conn.execute(query, (value, day_since, value, hour_since))).fetchone()
            assert row is not None
            return Spend(int(row[0]), int(row[1]))

        return await self._read(spent)

    async def pause_trigger(self: _Io, trigger_id: str, at: str) -> None:
        async def pause(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO paused_triggers (trigger_id, paused_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (trigger_id, at),
            )
            await notify(conn, "paused")

        await self._write(pause)

    async def resume_trigger(self: _Io, trigger_id: str) -> bool:
        async def resume(conn: Conn) -> bool:
            cur = await conn.execute("DELETE FROM paused_triggers WHERE trigger_id = %s", (trigger_id,))
            await notify(conn, "paused")
            return cur.rowcount > 0

        return await self._write(resume)

    async def paused_triggers(self: _Io) -> dict[str, str]:
        async def paused(conn: Conn) -> dict[str, str]:
            cur = await conn.execute("SELECT trigger_id, paused_at FROM paused_triggers")
            return {t: at for t, at in await cur.fetchall()}

        return await self._read(paused)
