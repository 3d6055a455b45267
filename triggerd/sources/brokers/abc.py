"""The broker contract (SPEC 5.4): what every source type implements, and nothing more.

A broker module (redis_stream.py, redis_list.py, amqp.py, nats.py, sse.py) is a thin adapter
from one client library to `Broker`. Everything the types share is the generic runner's
(`triggerd.sources.brokers.runner`): reconnecting with capped exponential backoff, turning a
message into an event through the source's `event:` mapping, publishing it on the bus,
deciding duplicates through the store, recording poison messages as dead letters, metrics
and the state `GET /v1/sources` shows. So a broker module never decodes a body, never talks
to the bus and never decides whether a message is a duplicate.

The runner's loop, which fixes what each method may assume:

    broker = module.create(source, context)
    await broker.connect()                    # BrokerError: retried after a backoff
    async for delivery in broker.deliveries():  # BrokerError: close(), then connect again
        ... commit what the messages of the delivery cause ...
        await broker.acknowledge(delivery)      # only after the commit
    await broker.close()                        # always, also after an error or on cancel

Rules every module keeps:

- **Deliveries.** `deliveries()` yields lists of messages: what the broker handed over
  together (one XREADGROUP reply, the AMQP deliveries received as the prefetch window refills,
  one JetStream fetch), oldest first, never more than `source.max_in_flight` in one list and
  never an empty one.
  The runner commits a delivery as one batch, and a delivery costs store round trips whatever
  its size, so fuller deliveries drain a backlog faster. A module yields what it has, or waits
  briefly (a few milliseconds at most) where the broker refills its window message by message
  after an acknowledgement, as RabbitMQ's prefetch does (amqp.py).
- **At most `source.max_in_flight` unacknowledged.** The runner asks for the next delivery
  only after it acknowledged the one before, all of it in one `acknowledge` call, and
  deliveries in the order given: so a module may acknowledge a delivery as one (XACK with
  many ids, basic.ack `multiple`), or owe the acknowledgement to its next read if it sends it
  before that read in the same round trip and on `close` (redis_stream.py pipelines XACK with
  the next XREADGROUP), but must not rely on every delivery being acknowledged: one
  the runner could not commit (the store refuses writes) is retried by the runner itself
  after a pause, and one still unacknowledged when the connection drops is the broker's to
  redeliver.
- **Redelivery is expected.** A message delivered again (after a crash, a reconnect, a claim
  from a dead consumer) carries the same `broker_id` as before; the runner's dedupe relies on
  it when the `event:` mapping gives no id.
- **Errors.** Every failure of the connection or the client is raised as BrokerError (or
  one of its subclasses) with a message that never contains the URL's password:
  use `display_url` to name the endpoint. `acknowledge` on a connection that has since dropped
  raises BrokerError too; the runner then reconnects and the broker redelivers.
- **Cancellation.** The runner cancels a task blocked in `deliveries()` to stop a source; a
  module must leave the broker consistent when cancelled at any await (an entry moved to a
  processing list is still there, a delivery not acked is redelivered).
- **No blocking calls** on the event loop.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from triggerd.config.models import SourceDefinition
from triggerd.errors import TriggerdError

MAX_DEAD_PAYLOAD_BYTES = 64 * 1024  # SPEC 5.4: a dead letter keeps the raw payload cut here


class BrokerError(TriggerdError):
    """The broker cannot be reached or refused an operation; the runner reconnects with backoff.

    The message must name the endpoint with `display_url`, never with the URL as written.
    """


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery from a broker, as the runner receives it.

    broker_id: the broker's own id of the message (stream entry id, AMQP message-id or delivery
        tag, JetStream stream sequence, SSE id; for a Redis list, a digest of the entry), the
        same on every redelivery of the message. It is the context's `id`.
    body: the raw bytes; the runner decodes them (JSON, else UTF-8 text, else null).
    headers: message headers or properties, JSON-compatible values (the context's `headers`).
    timestamp: the broker's timestamp as an RFC 3339 UTC string (`triggerd.clock.isoformat`),
        or None when the broker keeps none; the event's default `time`.
    context: the type's own context keys of SPEC 5.4, e.g. {"stream": "orders"} or
        {"list": "tasks"} or {"subject": "orders.eu"} or {"queue": "tasks"}.
    handle: whatever the module needs to acknowledge this message (a delivery tag, the raw
        list entry...); the runner never looks at it.
    """

    broker_id: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    timestamp: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    handle: Any = None


class Cursors(Protocol):
    """Where a broker that keeps no position of its own (SSE) keeps one, in the store."""

    async def source_cursor(self, source_id: str) -> str | None:
        """The position saved for the source, or None."""
        ...

    async def save_source_cursor(self, source_id: str, cursor: str, at: str) -> None:
        """Save the source's position (committed on return)."""
        ...


@dataclass(frozen=True, slots=True)
class BrokerContext:
    """What the daemon gives a broker module besides its definition.

    instance: this daemon's name among those sharing a store, "<host>:<pid>"; the consumer
        name in a Redis group, an AMQP consumer tag, so competing daemons stay apart.
    cursors: for a type whose acknowledgement is saving a position (SSE's Last-Event-ID).
    """

    instance: str
    cursors: Cursors


class Broker(Protocol):
    """One source's connection to its broker; created by the type module's `create`."""

    async def connect(self) -> None:
        """Open the connection and make sure what is consumed exists (create a consumer group,
        declare nothing the operator did not ask for); raises BrokerError."""
        ...

    def deliveries(self) -> AsyncIterator[list[Message]]:
        """Deliveries (non-empty lists of messages), oldest first, forever; at most max_in_flight
        messages unacknowledged at once.

        Messages this consumer received before a crash and never acknowledged come first
        where the broker keeps them (a Redis stream's pending entries, a list's processing
        list). Raises BrokerError when the connection is lost.
        """
        ...

    async def acknowledge(self, delivery: list[Message]) -> None:
        """Tell the broker the delivery is done (XACK, LREM, basic.ack, +ACK, a saved cursor).

        Called once per delivery, with the whole of it, only after everything its messages
        caused is committed; raises BrokerError. A module may send it with its next read (see
        the module docstring's rules).
        """
        ...

    async def lag(self) -> int | None:
        """Messages waiting on the broker for this consumer, where the broker reports it
        (a stream group's lag, a list's length, a queue's message count); None otherwise."""
        ...

    async def close(self) -> None:
        """Release the connection; never raises, may be called after a failed connect."""
        ...


class BrokerModule(Protocol):
    """What a type's module exposes: `create(source, context) -> Broker`."""

    def create(self, source: SourceDefinition, context: BrokerContext) -> Broker: ...


@dataclass(frozen=True, slots=True)
class BrokerType:
    """A source type: the key that names what it consumes, its module, and the client
    libraries (from the `[queues]` extra) it needs.

    target: the type's required key (stream, list, queue, subject; url for sse), shown by
        `triggerd list` and `GET /v1/sources`.
    requires: importable module names; a missing one is a validation error naming the extra.
    """

    name: str
    target: str
    module: str
    requires: tuple[str, ...]

    def missing(self) -> list[str]:
        """The required client modules that cannot be imported here."""
        missing = []
        for name in self.requires:
            try:
                importlib.import_module(name)
            except ImportError:
                missing.append(name)
        return missing

    def load(self) -> BrokerModule:
        """The type's module; raises BrokerError naming the `[queues]` extra when a client is missing."""
        missing = self.missing()
        if missing:
            raise BrokerError(f"source type {self.name!r} needs {', '.join(missing)}: install triggerd[queues]")
        module: BrokerModule = importlib.import_module(self.module)
        return module


BROKER_TYPES: Mapping[str, BrokerType] = {
    t.name: t
    for t in (
        BrokerType("redis-stream", "stream", "triggerd.sources.brokers.redis_stream", ("redis.asyncio",)),
        BrokerType("redis-list", "list", "triggerd.sources.brokers.redis_list", ("redis.asyncio",)),
        BrokerType("amqp", "queue", "triggerd.sources.brokers.amqp", ("aio_pika",)),
        BrokerType("nats", "subject", "triggerd.sources.brokers.nats", ("nats",)),
        BrokerType("sse", "url", "triggerd.sources.brokers.sse", ()),
    )
}
"""Every source type; the schema's `type` enum and validation read it."""


def target(source: SourceDefinition) -> str:
    """What a source consumes, for lists and status: its type's key, the URL shown safely for sse."""
    kind = BROKER_TYPES[source.type]
    if kind.target == "url":
        return display_url(source.url.reveal())
    return str(source.options.get(kind.target, ""))


def display_url(url: str) -> str:
    """A broker URL fit to show or log: scheme, host, port and path, never user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"
