"""LISTEN/NOTIFY wake-ups for daemons sharing a PostgreSQL store (SPEC 10).

Writes that give a daemon something to do NOTIFY the channel in their transaction, so the
notification is delivered at commit: a new pending run, a run ended (a limit has room again),
a lease taken over or expired, a cancel asked. Each daemon holds one dedicated connection that
LISTENs and calls back on every notification. Nothing depends on a notification arriving: the
dispatcher's poll stays the fallback, and after a reconnection the callback is called once,
since notifications sent while the connection was away are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from triggerd.store.postgres_claims import CHANNEL

log = logging.getLogger("triggerd.store")
IDLE_CHECK_SECONDS = 5.0  # an idle listener checks its connection this often (a cut network sends nothing)
BACKOFF = (0.1, 5.0)  # first and longest wait before connecting again


class Listener:
    """One LISTEN connection, made again with backoff while the database is away."""

    def __init__(
        self,
        url: str,
        options: dict[str, Any],
        callback: Callable[[str], None],
        describe: str,
        own: Callable[[], int | None],
    ) -> None:
        self.url = url
        self.own = own  # the backend pid of this daemon's writer: what it notified, it already acted on
        self.options = options
        self.callback = callback
        self.describe = describe
        self.task: asyncio.Task[None] | None = None
        self._delay = BACKOFF[0]

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="triggerd-store-listen")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("store notifications lost (%s); polling until %s answers again", exc, self.describe)
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, BACKOFF[1])

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.url, **self.options)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._delay = BACKOFF[0]
            self.callback("listening")  # what was notified while away is lost: look once
            while True:
                async for notification in conn.notifies(timeout=IDLE_CHECK_SECONDS):
                    if notification.pid != self.own():
                        self.callback(notification.payload)
                await asyncio.wait_for(conn.execute("SELECT 1"), IDLE_CHECK_SECONDS)
