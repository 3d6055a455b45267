"""The generic runner every source type shares (SPEC 5.4), and the set of running sources.

A SourceRunner owns one source: it connects through the type's Broker with capped
exponential backoff (a source that is down never stops the daemon), turns each message
into an event (`convert.to_event`), publishes it with `EventBus.publish_batch` and
acknowledges only after that returned, i.e. after every run, window change and the event id
are committed. A message that cannot become an event is stored as a dead letter, then
acknowledged. It works a delivery at a time (what the broker handed over together, at most
max_in_flight messages): the dead letters of the delivery, then its events in one
publish_batch, then one acknowledgement of the whole delivery. While the store refuses
writes the runner retries the same delivery after a pause and acknowledges none of it; it
asks for no new delivery either, and the broker holds the rest.

Order: events are matched and counted in delivery order, and a delivery's runs are all
committed before the next delivery is taken; the runs of one delivery are created in its
order (run ids are monotonic within a daemon) and committed together.

`Sources` starts a runner per enabled source, restarts only those whose definition changed
on reload, and reports their state for `GET /v1/sources` and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from triggerd.clock import Clock, isoformat
from triggerd.config.models import Configuration, SourceDefinition
from triggerd.errors import StoreError, Unavailable
from triggerd.masking import mask
from triggerd.metrics import METRICS
from triggerd.sources.brokers.abc import (
    BROKER_TYPES,
    MAX_DEAD_PAYLOAD_BYTES,
    Broker,
    BrokerContext,
    Message,
    display_url,
    target,
)
from triggerd.sources.brokers.convert import Poison, to_event
from triggerd.sources.bus import EventBus
from triggerd.store.abc import DeadMessage, Store

log = logging.getLogger("triggerd.sources")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
STORE_PAUSE = 1.0  # between two tries of the same message while the store refuses writes
LAG_INTERVAL = 5.0
OUTCOMES = ("published", "duplicate", "dead_letter")

T = TypeVar("T")


class SourceState(StrEnum):
    CONNECTING = "connecting"
    CONSUMING = "consuming"
    DOWN = "down"
    STOPPED = "stopped"


def instance_name() -> str:
    """This daemon among those sharing a broker: its consumer name in a group, "<host>:<pid>"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def scrub(text: str, url: str) -> str:
    """An error's text fit to log or show: the URL as display_url writes it, its password
    masked wherever else it appears, and every substituted secret masked (SPEC 2.3)."""
    text = text.replace(url, display_url(url))
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return mask(text)


class SourceRunner:
    """One source's consumer loop; `start` it once, `stop` it once."""

    def __init__(
        self,
        source: SourceDefinition,
        bus: EventBus,
        store: Store,
        clock: Clock,
        context: BrokerContext,
        max_message_bytes: int | None = None,
    ):
        self.source = source
        self.max_message_bytes = max_message_bytes
        self.bus = bus
        self.store = store
        self.clock = clock
        self.context = context
        self.state = SourceState.CONNECTING
        self.last_error: str | None = None
        self.since = isoformat(clock.now())
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.in_flight = 0
        self.lag: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"source {self.source.id}")

    async def stop(self) -> None:
        """Cancel the loop and close the connection; what is unacknowledged is the broker's to redeliver."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state(SourceState.STOPPED)
        for outcome in OUTCOMES:
            with contextlib.suppress(KeyError):
                METRICS.source_messages.remove(self.source.id, outcome)
        for gauge in (METRICS.source_in_flight, METRICS.source_up, METRICS.source_lag):
            with contextlib.suppress(KeyError):
                gauge.remove(self.source.id)

    def status(self) -> dict[str, Any]:
        """This source in GET /v1/sources."""
        return {
            "id": self.source.id,
            "type": self.source.type,
            "target": target(self.source),
            "state": str(self.state),
            "since": self.since,
            "last_error": self.last_error,
            "messages": dict(self.counts),
            "in_flight": self.in_flight,
            "lag": self.lag,
        }

    def _set_state(self, state: SourceState) -> None:
        if state is not self.state:
            self.state = state
            self.since = isoformat(self.clock.now())
        METRICS.source_up.labels(self.source.id).set(1 if state is SourceState.CONSUMING else 0)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = scrub(str(exc) or type(exc).__name__, self.source.url.reveal())
        self._set_state(SourceState.DOWN)
        log.warning("source %s is down: %s", self.source.id, self.last_error, extra={"source_id": self.source.id})

    async def _run(self) -> None:
        delay = BACKOFF_START
        while True:
            self._set_state(SourceState.CONNECTING)
            broker: Broker | None = None
            lag_task: asyncio.Task[None] | None = None
            try:
                broker = BROKER_TYPES[self.source.type].load().create(self.source, self.context)
                await broker.connect()
                self._set_state(SourceState.CONSUMING)
                log.info("source %s consuming", self.source.id, extra={"source_id": self.source.id})
                lag_task = asyncio.create_task(self._watch_lag(broker))
                async for delivery in broker.deliveries():
                    delay = BACKOFF_START  # a delivery proves the connection works
                    await self._handle(broker, delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a client's own errors too: a broken source never stops the daemon
                self._failed(exc)
            finally:
                if lag_task is not None:
                    lag_task.cancel()
                if broker is not None:
                    await broker.close()
                self.in_flight = 0
                METRICS.source_in_flight.labels(self.source.id).set(0)
            # Jitter, so that daemons sharing a broker do not all come back in the same instant.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_CAP)

    async def _handle(self, broker: Broker, delivery: list[Message]) -> None:
        self.in_flight = len(delivery)
        METRICS.source_in_flight.labels(self.source.id).set(self.in_flight)
        try:
            now = self.clock.now()
            events = []
            outcomes: list[str] = []
            for message in delivery:
                try:
                    events.append(to_event(self.source, message, now, self.max_message_bytes))
                except Poison as exc:
                    await self._dead_letter(message, exc, now)
                    outcomes.append("dead_letter")
            if events:
                published = await self._until_stored(lambda: self.bus.publish_batch(events, origin="source"))
                outcomes.extend("duplicate" if p is None else "published" for p in published)
            await broker.acknowledge(delivery)
            for outcome in OUTCOMES:
                if found := outcomes.count(outcome):
                    self.counts[outcome] += found
                    METRICS.source_messages.labels(self.source.id, outcome).inc(found)
        finally:
            self.in_flight = 0
            METRICS.source_in_flight.labels(self.source.id).set(0)

    async def _dead_letter(self, message: Message, exc: Poison, now: datetime) -> None:
        """Store a message that cannot become an event (committed on return)."""
        # One id per (source, broker id): a poison message redelivered because its ack was lost
        # is recorded once.
        digest = hashlib.sha256(f"{self.source.id}\0{message.broker_id}".encode()).hexdigest()
        dead = DeadMessage(
            id="dlm_" + digest[:24],
            source_id=self.source.id,
            reason=mask(str(exc)),
            payload=message.body[:MAX_DEAD_PAYLOAD_BYTES],
            headers=dict(message.headers),
            broker_id=message.broker_id,
            received_at=isoformat(now),
        )
        await self._until_stored(lambda: self.store.add_dead_message(dead))
        log.warning(
            "source %s: message %s is a dead letter: %s",
            self.source.id,
            message.broker_id,
            dead.reason,
            extra={"source_id": self.source.id},
        )

    async def _until_stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store write until it succeeds: nothing is acknowledged that was not stored.

        A stop (reload, shutdown) does not cut a write short: it is shielded, so the bus's
        windows in memory never part from what the store committed; only the ack is skipped.
        """
        while True:
            try:
                return await asyncio.shield(write())
            except (StoreError, Unavailable) as exc:
                self.last_error = scrub(f"store refused the write: {exc}", self.source.url.reveal())
                log.warning(
                    "source %s paused: %s", self.source.id, self.last_error, extra={"source_id": self.source.id}
                )
                await asyncio.sleep(STORE_PAUSE)

    async def _watch_lag(self, broker: Broker) -> None:
        while True:
            try:
                self.lag = await broker.lag()
            except Exception:  # lag is informative only; the consumer loop reports real failures
                self.lag = None
            if self.lag is not None:
                METRICS.source_lag.labels(self.source.id).set(self.lag)
            await asyncio.sleep(LAG_INTERVAL)


class Sources:
    """The daemon's sources: started after the bus, stopped before it (SPEC 5.4)."""

    def __init__(
        self,
        bus: EventBus,
        store: Store,
        clock: Clock,
        instance: str | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.bus = bus
        self.max_message_bytes = max_message_bytes
        self.store = store
        self.clock = clock
        self.context = BrokerContext(instance or instance_name(), store)
        self.runners: dict[str, SourceRunner] = {}

    async def start(self, configuration: Configuration) -> None:
        """Start a runner for every enabled source; none of them waits for its broker."""
        await self.reconfigure(configuration)

    async def reconfigure(self, configuration: Configuration) -> tuple[int, int, int]:
        """Stop removed and changed sources, start new and changed ones, leave the rest consuming.

        Returns (started, stopped, restarted).
        """
        wanted: Mapping[str, SourceDefinition] = {s.id: s for s in configuration.sources.values() if s.enabled}
        started = stopped = restarted = 0
        for source_id, runner in list(self.runners.items()):
            new = wanted.get(source_id)
            if new is None or new.fingerprint != runner.source.fingerprint:
                await runner.stop()
                del self.runners[source_id]
                if new is None:
                    stopped += 1
                else:
                    restarted += 1
        for source_id, source in wanted.items():
            if source_id not in self.runners:
                runner = SourceRunner(source, self.bus, self.store, self.clock, self.context, self.max_message_bytes)
                runner.start()
                self.runners[source_id] = runner
                started += 1
        return started - restarted, stopped, restarted

    async def stop(self) -> None:
        for runner in self.runners.values():
            await runner.stop()
        self.runners.clear()

    def report(self) -> list[dict[str, Any]]:
        """GET /v1/sources: every running source's state, by id."""
        return [self.runners[k].status() for k in sorted(self.runners)]
