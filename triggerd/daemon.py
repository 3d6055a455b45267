"""The daemon's lifecycle: start in order, report ready, drain, stop in reverse (SPEC 8).

Each component registers its own teardown on an AsyncExitStack as it starts, so a
failure half-way still stops what had started, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from contextlib import AsyncExitStack
from datetime import timedelta
from enum import Enum
from pathlib import Path

from triggerd.clock import Clock, SystemClock, isoformat
from triggerd.config.loader import LoadMode, load
from triggerd.config.models import Configuration
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.errors import StoreError
from triggerd.http.server import HttpServer
from triggerd.logs import configure_logging
from triggerd.sources.bus import EventBus
from triggerd.sources.schedule import Scheduler
from triggerd.store import open_store
from triggerd.store.abc import Store

log = logging.getLogger("triggerd")
PRUNE_INTERVAL_SECONDS = 3600.0


class DaemonState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Daemon:
    def __init__(self, settings_path: Path | None, clock: Clock | None = None) -> None:
        self.settings_path = settings_path
        self.clock = clock or SystemClock()
        self.state = DaemonState.STARTING
        self.configuration: Configuration | None = None
        self.store: Store | None = None
        self._stop = asyncio.Event()
        self._interrupts = 0

    def request_stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM, or the first SIGINT)."""
        self._stop.set()

    def _interrupt(self) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            log.warning("second interrupt: exiting at once")
            os._exit(130)
        self.request_stop()

    async def serve(self) -> int:
        """Run until asked to stop; returns the process exit status."""
        result = load(self.settings_path, mode=LoadMode.DAEMON)
        configuration = result.configuration
        if configuration is not None:
            configure_logging(configuration.settings.logging)
        for problem in result.problems:
            log.log(
                logging.ERROR if problem.is_error else logging.WARNING,
                "%s",
                problem,
                extra={"file": problem.file, "line": problem.line},
            )
        if configuration is None:
            log.error("the settings file is not usable; not starting")
            return 1
        self.configuration = configuration
        settings = configuration.settings
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
            stack.callback(loop.remove_signal_handler, signal.SIGTERM)
            stack.callback(loop.remove_signal_handler, signal.SIGINT)

            store = open_store(settings.store)
            await store.open()
            stack.push_async_callback(store.close)
            self.store = store

            dispatcher = Dispatcher(store, configuration, clock=self.clock)
            resumed = await dispatcher.start()
            stack.push_async_callback(dispatcher.drain, 0.0)

            bus = EventBus(dispatcher, store, self.clock, settings.limits.max_event_chain_depth)
            await bus.start()
            dispatcher.listener = bus.run_finished
            stack.push_async_callback(bus.stop)

            scheduler = Scheduler(dispatcher, store, self.clock)
            await scheduler.start()
            stack.push_async_callback(scheduler.stop)

            http = HttpServer(
                settings,
                dispatcher,
                self.readiness,
                self.clock,
                accepting=lambda: self.state is DaemonState.RUNNING,
                schedules=scheduler.state,
                events=bus,
            )
            await http.start()
            stack.push_async_callback(http.stop)

            pruner = asyncio.create_task(self._prune_forever(store, settings.store.retention))
            stack.callback(pruner.cancel)

            self.state = DaemonState.RUNNING
            log.info(
                "ready: %d triggers, %d agents, %d runs resumed",
                len(configuration.triggers),
                len(configuration.agents),
                resumed,
                extra={"urls": http.urls},
            )
            await self._stop.wait()

            self.state = DaemonState.DRAINING
            await scheduler.stop()
            grace = settings.limits.shutdown_grace_seconds
            log.info("draining: waiting up to %gs for %d running runs", grace, dispatcher.running)
            await dispatcher.drain(grace)
        self.state = DaemonState.STOPPED
        log.info("stopped")
        return 0

    async def readiness(self) -> list[str]:
        problems = []
        if self.state is not DaemonState.RUNNING:
            problems.append(f"daemon is {self.state.value}")
        if self.store is None:
            problems.append("store is not open")
        else:
            try:
                await asyncio.wait_for(self.store.ping(), 2.0)
            except (StoreError, TimeoutError) as exc:
                problems.append(f"store unreachable: {exc or 'timed out'}")
        return problems

    async def _prune_forever(self, store: Store, retention: float) -> None:
        while True:
            now = self.clock.now()
            with contextlib.suppress(StoreError):
                deleted = await store.prune(isoformat(now - timedelta(seconds=retention)), isoformat(now))
                if deleted:
                    log.info("pruned %d finished runs older than the retention", deleted)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)


def run_daemon(settings_path: Path | None) -> int:
    """`triggerd run`: serve until stopped; a store or port that cannot be opened exits 1."""
    logging.basicConfig(level=logging.INFO)
    try:
        return asyncio.run(Daemon(settings_path).serve())
    except (StoreError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
