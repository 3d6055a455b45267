"""`redis-stream` sources (SPEC 5.4): a Redis stream read through a consumer group.

Each daemon is one consumer of the group, named by its instance ("<host>:<pid>"), so several
daemons share the entries, each handled by one. An entry is acknowledged (XACK) after the
commit. Entries this consumer read and never acknowledged (a reconnect) are read again first
(XREADGROUP from 0); entries left pending by a consumer that died (a crashed daemon: its name
dies with its pid) are claimed after `claim_idle` with XAUTOCLAIM. A live consumer slower
than claim_idle may lose an entry to another; the store's dedupe makes that fire nothing twice.

The XACK of a delivery travels with the next read, in one pipeline (XACK, then XREADGROUP or
XAUTOCLAIM): one round trip a delivery instead of two, and since Redis runs the XACK first, no
more than max_in_flight entries are ever pending for this consumer. `close` sends an XACK still
owed; one lost with the connection leaves its entries pending, read again (XREADGROUP from 0)
and found duplicates by the runner.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from triggerd.clock import isoformat
from triggerd.config.models import SourceDefinition
from triggerd.sources.brokers.abc import BrokerContext, Message
from triggerd.sources.brokers.redis_client import RedisClient

BLOCK_MS = 1000  # one XREADGROUP waits this long, so claims are looked for while idle too
MAX_CLAIM_CHECK = 5.0  # look for idle entries of dead consumers at least this often


def create(source: SourceDefinition, context: BrokerContext) -> RedisStream:
    return RedisStream(source, context)


def entry_time(entry_id: str) -> str | None:
    """An entry id's milliseconds as an RFC 3339 instant (the broker's timestamp)."""
    try:
        millis = int(entry_id.split("-", 1)[0])
    except ValueError:
        return None
    return isoformat(datetime.fromtimestamp(millis / 1000, UTC))


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisStream(RedisClient):
    def __init__(self, source: SourceDefinition, context: BrokerContext) -> None:
        self.source = source
        super().__init__(source.url.reveal())
        self.key = str(source.options["stream"])
        self.group = str(source.options["group"])
        self.start = str(source.options["start"])
        self.field = str(source.options["field"]).encode()
        self.claim_idle = float(source.options["claim_idle"])
        self.consumer = context.instance
        self.owed: list[str] = []  # entry ids committed and not yet acknowledged: sent with the next read

    async def connect(self) -> None:
        await super().connect()
        try:
            await self._connected().xgroup_create(self.key, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: another daemon, or an earlier start
                raise self._error(f"creating group {self.group!r} of stream {self.key!r}", exc) from None
        except (RedisError, OSError) as exc:
            raise self._error(f"creating group {self.group!r} of stream {self.key!r}", exc) from None

    def _message(self, entry_id: Any, fields: Any) -> Message:
        ident = text(entry_id)
        fields = fields or {}
        return Message(
            broker_id=ident,
            body=fields.get(self.field, b""),
            headers={text(k): text(v) for k, v in fields.items() if k != self.field},
            timestamp=entry_time(ident),
            context={"stream": self.key},
            handle=ident,
        )

    async def deliveries(self) -> AsyncIterator[list[Message]]:
        client = self._connected()
        count = self.source.max_in_flight
        try:
            # What this consumer was given and never acknowledged (a connection lost mid-batch).
            cursor = "0"
            while True:
                pipe = self._after_acks(client)
                pipe.xreadgroup(self.group, self.consumer, {self.key: cursor}, count=count)
                found: Any = await self._reply(pipe)
                entries = found[0][1] if found else []
                if not entries:
                    break
                delivery = await self._delivery(client, entries)
                if delivery:
                    yield delivery
                cursor = text(entries[-1][0])
            next_claim = 0.0
            while True:
                if time.monotonic() >= next_claim:
                    async for delivery in self._claim(client, count):
                        yield delivery
                    next_claim = time.monotonic() + min(self.claim_idle, MAX_CLAIM_CHECK)
                pipe = self._after_acks(client)
                pipe.xreadgroup(self.group, self.consumer, {self.key: ">"}, count=count, block=BLOCK_MS)
                found = await self._reply(pipe)
                for _stream, entries in found or []:
                    if entries:
                        yield [self._message(entry_id, fields) for entry_id, fields in entries]
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group was deleted: connect creates it again
                raise self._error(f"reading group {self.group!r} of stream {self.key!r}", exc) from None
            raise self._error("reading", exc) from None
        except (RedisError, OSError) as exc:
            raise self._error("reading", exc) from None

    async def _delivery(self, client: Redis, entries: Any) -> list[Message]:
        """Pending entries as messages; those deleted from the stream meanwhile have nothing to
        handle and are acknowledged here."""
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await client.xack(self.key, self.group, *gone)
        return [self._message(entry_id, fields) for entry_id, fields in entries if fields]

    async def _claim(self, client: Redis, count: int) -> AsyncIterator[list[Message]]:
        """Entries idle longer than claim_idle in other consumers' pending lists, now ours."""
        start, idle_ms = "0-0", int(self.claim_idle * 1000)
        while True:
            pipe = self._after_acks(client)
            pipe.xautoclaim(self.key, self.group, self.consumer, idle_ms, start_id=start, count=count)
            answer: Any = await self._reply(pipe)
            start = text(answer[0])
            delivery = await self._delivery(client, answer[1])
            if delivery:
                yield delivery
            if start == "0-0":
                return

    def _after_acks(self, client: Redis) -> Pipeline:
        """A pipeline that begins with the XACK owed, if any; the caller queues one read on it."""
        pipe = client.pipeline(transaction=False)
        if self.owed:
            pipe.xack(self.key, self.group, *self.owed)
        return pipe

    async def _reply(self, pipe: Pipeline) -> Any:
        """Send the pipeline (one round trip): the read's reply; the XACK owed is then done."""
        replies = await pipe.execute()
        self.owed.clear()
        return replies[-1]

    async def acknowledge(self, delivery: list[Message]) -> None:
        # Owed until the next read (see the module's docstring); the runner reads next at once.
        self.owed.extend(m.handle for m in delivery)

    async def lag(self) -> int | None:
        for group in await self._connected().xinfo_groups(self.key):
            if text(group.get("name")) == self.group:
                lag = group.get("lag")
                return int(lag) if lag is not None else None
        return None

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                if self.owed:  # a stop between an acknowledgement and the next read
                    await self.client.xack(self.key, self.group, *self.owed)
                    self.owed.clear()
        await super().close()
