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

import hashlib
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError

from triggerd.config.models import SourceDefinition
from triggerd.sources.brokers.abc import BrokerContext, Message
from triggerd.sources.brokers.redis_client import RedisClient

BLOCK_SECONDS = 1  # one BLMOVE waits this long; a stop cancels it anyway


def create(source: SourceDefinition, context: BrokerContext) -> RedisList:
    return RedisList(source)


class RedisList(RedisClient):
    def __init__(self, source: SourceDefinition) -> None:
        super().__init__(source.url.reveal())
        self.key = str(source.options["list"])
        self.processing = f"{self.key}:processing"

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
