"""`nats` sources (SPEC 5.4): a JetStream durable pull consumer, with nats-py.

The durable `durable` on stream `stream` filters `subject`, acknowledges explicitly, and keeps
at most max_in_flight messages unacknowledged (max_ack_pending), so the server itself bounds
what is in flight. Each message is acknowledged (+ACK, waiting for the server's confirmation)
after the commit; one left unacknowledged (a crash, a lost connection) is delivered again by
the server once `ack_wait` has passed. Several daemons pull from the same durable and compete:
each message goes to one of them.

triggerd creates the durable when it does not exist (delivering the whole stream, as far as
the stream still keeps it); when it exists, it is used as it is, its filter, max_ack_pending
and ack_wait updated to the definition's. The stream is the operator's: a missing stream is a
connection error, retried with backoff, never created.

The broker id is the `Nats-Msg-Id` header when the publisher set one (JetStream's own
de-duplication id), else the message's stream sequence, which every redelivery keeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from triggerd.clock import isoformat
from triggerd.config.models import SourceDefinition
from triggerd.sources.brokers.abc import BrokerContext, BrokerError, Message, display_url

CONNECT_TIMEOUT = 5
FETCH_WAIT = 2.0  # one pull waits this long for messages; a lost connection shows within it
ACK_TIMEOUT = 5.0
ERRORS = (NatsError, OSError, TimeoutError, ValueError)


def create(source: SourceDefinition, context: BrokerContext) -> NatsSource:
    return NatsSource(source)


async def _ignore(exc: Exception) -> None:
    """nats-py's error callback: every failure that matters reaches a call of ours as an exception,
    and its default callback would log texts triggerd does not control."""


class NatsSource:
    def __init__(self, source: SourceDefinition) -> None:
        self.source = source
        self.url = source.url.reveal()
        self.subject = str(source.options["subject"])
        self.stream = str(source.options["stream"])
        self.durable = str(source.options["durable"])
        self.ack_wait = float(source.options["ack_wait"])
        self.client: Client | None = None
        self.pull: JetStreamContext.PullSubscription | None = None

    def _error(self, action: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"{action} on {display_url(self.url)} failed: {exc.__class__.__name__}: {exc}")

    async def connect(self) -> None:
        action = "connecting"
        try:
            # No reconnecting inside the client: the runner owns it, with its backoff and state.
            self.client = await nats.connect(
                self.url,
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=False,
                error_cb=_ignore,
            )
            js = self.client.jetstream()
            action = f"binding durable {self.durable!r} of stream {self.stream!r}"
            await self._ensure_consumer(js)
            self.pull = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        except ERRORS as exc:
            raise self._error(action, exc) from None

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            config = ConsumerConfig(
                name=self.durable,
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                filter_subject=self.subject,
                max_ack_pending=self.source.max_in_flight,
            )
            await js.add_consumer(self.stream, config)
            return
        config = info.config
        policy = getattr(config.ack_policy, "value", config.ack_policy)  # the server's answer: a plain string
        if policy != AckPolicy.EXPLICIT.value:
            raise BrokerError(
                f"durable {self.durable!r} of stream {self.stream!r} acknowledges {policy!r}, "
                "not explicit: a message could be acknowledged before its commit"
            )
        wanted = (self.subject, self.source.max_in_flight, self.ack_wait)
        if (config.filter_subject, config.max_ack_pending, config.ack_wait) != wanted:
            await js.add_consumer(
                self.stream,
                config.evolve(
                    filter_subject=self.subject, max_ack_pending=self.source.max_in_flight, ack_wait=self.ack_wait
                ),
            )

    def _message(self, msg: Msg) -> Message:
        headers = dict(msg.headers or {})
        metadata = msg.metadata
        stamp = metadata.timestamp
        return Message(
            broker_id=headers.get("Nats-Msg-Id") or str(metadata.sequence.stream),
            body=msg.data,
            headers=headers,
            timestamp=isoformat(stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)),
            context={"subject": msg.subject, "stream": self.stream},
            handle=msg,
        )

    async def deliveries(self) -> AsyncIterator[list[Message]]:
        if self.pull is None:
            raise BrokerError("not connected")
        while True:
            try:
                batch = await self.pull.fetch(self.source.max_in_flight, timeout=FETCH_WAIT)
            except NatsTimeout:  # nothing arrived within the pull's wait
                await self._still_there()
                continue
            except ERRORS as exc:
                raise self._error(f"pulling from durable {self.durable!r}", exc) from None
            if batch:
                yield [self._message(msg) for msg in batch]

    async def _still_there(self) -> None:
        """A pull on a durable that was deleted just expires; ask for it while idle, so a deleted
        durable is a connection error (connect creates it again) rather than silence forever."""
        assert self.pull is not None
        try:
            await self.pull.consumer_info()
        except ERRORS as exc:
            raise self._error(f"looking up durable {self.durable!r} of stream {self.stream!r}", exc) from None

    async def acknowledge(self, delivery: list[Message]) -> None:
        try:
            for message in delivery:
                msg: Msg = message.handle
                await msg.ack_sync(timeout=ACK_TIMEOUT)
        except ERRORS as exc:
            raise self._error("acknowledging", exc) from None

    async def lag(self) -> int | None:
        """Messages of the stream matching the filter that the durable has not delivered yet."""
        if self.pull is None:
            return None
        info: Any = await self.pull.consumer_info()
        return int(info.num_pending) if info.num_pending is not None else None

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(*ERRORS):
                await self.client.close()
            self.client = self.pull = None
