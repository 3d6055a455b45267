"""`amqp` sources (SPEC 5.4): a RabbitMQ queue consumed over AMQP 0-9-1 with aio-pika.

The queue is consumed with manual acknowledgement and a prefetch (basic.qos) of max_in_flight,
so the broker itself never hands out more than that unacknowledged; basic.ack follows the
commit. A delivery unacknowledged when the connection drops (a crash, a broker restart) is
requeued by RabbitMQ and delivered again. Several daemons on one queue are competing consumers:
RabbitMQ gives each message to one of them.

The queue is used as it is when it exists (a passive declare, so its arguments are the
operator's); when it does not, it is declared durable, non-exclusive, without arguments, so
that messages published before triggerd first connects are kept and a broker restart loses
none of them.

The broker id is the AMQP `message_id` property when the producer set one. Without it a message
has no id of its own (a delivery tag counts deliveries on one channel and changes on every
redelivery), so the id is the SHA-256 of the body, as for a Redis list entry: a redelivery is
recognised, and two equal bodies within dedupe_window are one event unless the producer sets
message_id or `event.id` takes an id from the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelNotFoundEntity

from triggerd.clock import isoformat
from triggerd.config.models import SourceDefinition
from triggerd.sources.brokers.abc import BrokerContext, BrokerError, Message, display_url

CONNECT_TIMEOUT = 10.0
GATHER = 0.002  # seconds a delivery waits for the broker to fill the prefetch window
HEARTBEAT = 30  # seconds; a silent network partition ends in an error within two of them
ERRORS = (*CONNECTION_EXCEPTIONS, TimeoutError, ValueError)
# The basic properties a message may carry, shown in the context's headers when set.
PROPERTIES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "type",
    "user_id",
    "app_id",
    "exchange",
    "routing_key",
    "redelivered",
)


def create(source: SourceDefinition, context: BrokerContext) -> Amqp:
    return Amqp(source, context)


def plain(value: Any) -> Any:
    """An AMQP field value as JSON: bytes as text, timestamps in RFC 3339, tables and arrays inside."""
    if isinstance(value, str | int | float):  # most of them, and JSON already (bool is an int)
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return isoformat(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class Amqp:
    def __init__(self, source: SourceDefinition, context: BrokerContext) -> None:
        self.source = source
        self.url = source.url.reveal()
        self.name = str(source.options["queue"])
        self.tag = f"triggerd {context.instance}"
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.queue: AbstractQueue | None = None

    def _error(self, action: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"{action} on {display_url(self.url)} failed: {exc.__class__.__name__}: {exc}")

    async def connect(self) -> None:
        try:
            # connect(), not connect_robust(): the runner owns reconnecting, and a channel that
            # comes back by itself would redeliver behind the runner's back.
            self.connection = await aio_pika.connect(
                self.url, timeout=CONNECT_TIMEOUT, heartbeat=HEARTBEAT, client_properties={"connection_name": self.tag}
            )
            channel = await self.connection.channel()
            try:
                self.queue = await channel.declare_queue(self.name, passive=True)
            except ChannelNotFoundEntity:
                channel = await self.connection.channel()  # a failed passive declare closed the other
                self.queue = await channel.declare_queue(self.name, durable=True)
            await channel.set_qos(prefetch_count=self.source.max_in_flight)
            self.channel = channel
        except ERRORS as exc:
            raise self._error(f"consuming queue {self.name!r}", exc) from None

    def _message(self, delivery: AbstractIncomingMessage) -> Message:
        properties = {k: plain(v) for k in PROPERTIES if (v := getattr(delivery, k, None)) is not None}
        timestamp = delivery.timestamp
        return Message(
            broker_id=delivery.message_id or hashlib.sha256(delivery.body).hexdigest()[:32],
            body=delivery.body,
            headers={**plain(delivery.headers or {}), **properties},
            timestamp=plain(timestamp) if timestamp is not None else None,
            context={"queue": self.name},
            handle=delivery,
        )

    async def deliveries(self) -> AsyncIterator[list[Message]]:
        if self.channel is None or self.queue is None:
            raise BrokerError("not connected")
        inbox: asyncio.Queue[AbstractIncomingMessage | BaseException] = asyncio.Queue()

        async def deliver(delivery: AbstractIncomingMessage) -> None:
            inbox.put_nowait(delivery)  # never more than prefetch of them

        def closed(_sender: Any, exc: BaseException | None) -> None:
            inbox.put_nowait(exc or ConnectionError("the channel was closed"))

        async def cancelled(_frame: Any) -> None:  # the queue was deleted: connect declares it again
            inbox.put_nowait(ConnectionError(f"the broker cancelled the consumer of queue {self.name!r}"))

        self.channel.close_callbacks.add(closed)
        try:
            underlay = await self.channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(cancelled)
            await self.queue.consume(deliver, no_ack=False, consumer_tag=self.tag)
        except ERRORS as exc:
            raise self._error(f"consuming queue {self.name!r}", exc) from None
        loop = asyncio.get_running_loop()
        while True:
            item = await inbox.get()
            delivery: list[Message] = []
            gathered_by = loop.time() + GATHER
            # What has arrived, at most prefetch (max_in_flight) of them, then a failure behind them.
            while not isinstance(item, BaseException):
                delivery.append(self._message(item))
                if len(delivery) >= self.source.max_in_flight:
                    break
                if inbox.empty():
                    # The acknowledgement of the last delivery freed the prefetch window and the
                    # broker refills it after one round trip: wait that long for a full delivery.
                    left = gathered_by - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(inbox.get(), left)
                    except TimeoutError:
                        break
                    continue
                item = inbox.get_nowait()
            if delivery:
                yield delivery
            if isinstance(item, BaseException):
                raise self._error(f"consuming queue {self.name!r}", item)

    async def acknowledge(self, delivery: list[Message]) -> None:
        # One basic.ack with `multiple` for the delivery: the runner acknowledges every delivery,
        # in order, before it takes the next, so no earlier tag on the channel is left open.
        last: AbstractIncomingMessage = delivery[-1].handle
        try:
            await last.ack(multiple=True)
        except ERRORS as exc:
            raise self._error("acknowledging", exc) from None

    async def lag(self) -> int | None:
        """Messages ready in the queue (not those delivered and unacknowledged)."""
        if self.queue is None:
            return None
        declared = await self.queue.declare()
        count = declared.message_count
        return int(count) if count is not None else None

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(*ERRORS):
                await self.connection.close()
            self.connection = self.channel = self.queue = None
