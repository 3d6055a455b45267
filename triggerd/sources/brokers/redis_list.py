"""`redis-list` sources (SPEC 5.4): the reliable-queue pattern on a Redis list.

Producers LPUSH entries; triggerd moves the oldest (BLMOVE RIGHT -> LEFT) into
"<list>:processing", and removes it from there (LREM) once what it caused is committed. An
entry a crash left in the processing list is handled again when a consumer connects, before
any new one.

A list entry has no id of its own: its broker id is the SHA-256 of its bytes, so a redelivered
entry is recognised, and two equal entries within the source's dedupe_window are one event
unless `event.id` takes an id from the body. Several daemons may share a list: each entry goes
to one of them (BLMOVE is atomic), and they share the processing list too, so a daemon that
connects also handles what another is handling right now; the store's dedupe makes that fire
nothing twice (the runs' idempotency key), at the price of the work of mapping it again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from triggerd.config.models import SourceDefinition
from triggerd.sources.brokers.abc import BrokerContext, BrokerError, Message, display_url

BLOCK_SECONDS = 1  # one BLMOVE waits this long; a stop cancels it anyway
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0  # well above one blocking read, so a silent network partition ends in an error


def create(source: SourceDefinition, context: BrokerContext) -> RedisList:
    return RedisList(source)


class RedisList:
    def __init__(self, source: SourceDefinition) -> None:
        self.url = source.url.reveal()
        self.key = str(source.options["list"])
        self.processing = f"{self.key}:processing"
        self.client: Redis | None = None

    def _error(self, action: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"{action} on {display_url(self.url)} failed: {exc.__class__.__name__}: {exc}")

    def _connected(self) -> Redis:
        if self.client is None:
            raise BrokerError("not connected")
        return self.client

    async def connect(self) -> None:
        try:
            self.client = Redis.from_url(
                self.url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=READ_TIMEOUT, socket_keepalive=True
            )
            await self.client.ping()
        except (RedisError, OSError, ValueError) as exc:
            raise self._error("connecting", exc) from None

    def _message(self, entry: bytes) -> Message:
        return Message(
            broker_id=hashlib.sha256(entry).hexdigest()[:32],
            body=entry,
            context={"list": self.key},
            handle=entry,
        )

    async def deliveries(self) -> AsyncIterator[list[Message]]:
        client = self._connected()
        try:
            # Oldest last: BLMOVE puts each entry at the head of the processing list.
            leftovers: list[bytes] = await client.lrange(self.processing, 0, -1)  # type: ignore[assignment]
            for leftover in reversed(leftovers):
                yield [self._message(leftover)]
            while True:
                entry: Any = await client.blmove(self.key, self.processing, BLOCK_SECONDS, src="RIGHT", dest="LEFT")
                if entry is not None:
                    yield [self._message(entry)]  # one at a time: BLMOVE moves one entry
        except (RedisError, OSError) as exc:
            raise self._error("reading", exc) from None

    async def acknowledge(self, delivery: list[Message]) -> None:
        try:
            pipe = self._connected().pipeline(transaction=False)
            for message in delivery:
                pipe.lrem(self.processing, 1, message.handle)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._error("acknowledging", exc) from None

    async def lag(self) -> int | None:
        return int(await self._connected().llen(self.key))

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()
            self.client = None
