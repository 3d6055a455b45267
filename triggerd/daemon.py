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
from collections.abc import Awaitable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from triggerd.clock import Clock, SystemClock, isoformat
from triggerd.config.applied import Applied, ReloadRecord
from triggerd.config.loader import LoadMode, LoadResult, load
from triggerd.config.models import Configuration
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.errors import StoreError
from triggerd.http.connections import raise_open_file_limit
from triggerd.http.server import HttpServer
from triggerd.logs import configure_logging
from triggerd.metrics import METRICS
from triggerd.sources.brokers.runner import Sources
from triggerd.sources.bus import EventBus
from triggerd.sources.events import Event, new_event_id
from triggerd.sources.schedule import Scheduler
from triggerd.store import open_store
from triggerd.store.abc import Store
from triggerd.systemd import Notifier
from triggerd.watch import watch

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
        self._reload_lock = asyncio.Lock()
        self.notifier = Notifier()
        self.dispatcher: Dispatcher | None = None
        self.http: HttpServer | None = None
        self.bus: EventBus | None = None
        self.scheduler: Scheduler | None = None
        self.sources: Sources | None = None
        self.reloads = {"applied": 0, "rejected": 0}
        self.applied: Applied | None = None
        self.last_reload: ReloadRecord | None = None

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
        self._applied(Applied(result, self.clock.now()))
        settings = configuration.settings
        raise_open_file_limit()  # SPEC 7.1; the HTTP server sizes its connection cap from it
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload("SIGHUP")))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                stack.callback(loop.remove_signal_handler, sig)

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

            # After the bus, before the HTTP server; stopped before the bus (SPEC 5.4).
            sources = Sources(bus, store, self.clock, max_message_bytes=settings.server.max_body_bytes)
            self.sources = sources
            await sources.start(configuration)
            stack.push_async_callback(sources.stop)

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
                reload=self.reload,
                config=self.config_report,
                sources=sources.report,
            )
            await http.start()
            stack.push_async_callback(http.stop)

            self.dispatcher, self.http, self.bus, self.scheduler = dispatcher, http, bus, scheduler
            METRICS.watch(lambda: dispatcher.queue_depth, lambda: dispatcher.running)
            pruner = asyncio.create_task(self._prune_forever(store, settings.store.retention))
            stack.callback(pruner.cancel)
            watchdog = asyncio.create_task(self.notifier.watchdog())
            stack.callback(watchdog.cancel)
            stop_watching = asyncio.Event()
            watcher = asyncio.create_task(watch(settings, self.reload, stop_watching))
            stack.callback(stop_watching.set)

            self.state = DaemonState.RUNNING
            self.notifier.ready(self._status())
            log.info(
                "ready: %d triggers, %d agents, %d runs resumed",
                len(configuration.triggers),
                len(configuration.agents),
                resumed,
                extra={"urls": http.urls},
            )
            await self._stop.wait()

            self.state = DaemonState.DRAINING
            self.notifier.stopping()
            stop_watching.set()
            await asyncio.wait([watcher], timeout=2)
            await sources.stop()  # take no more messages; what is unacknowledged the brokers redeliver
            await scheduler.stop()
            grace = settings.limits.shutdown_grace_seconds
            log.info("draining: waiting up to %gs for %d running runs", grace, dispatcher.running)
            await dispatcher.drain(grace)
        self.state = DaemonState.STOPPED
        log.info("stopped")
        return 0

    def _status(self) -> str:
        configuration = self.configuration
        if configuration is None:
            return "starting"
        return f"serving {len(configuration.triggers)} triggers, {len(configuration.agents)} agents"

    def _background(self, work: Awaitable[object]) -> None:
        def report(task: asyncio.Future[object]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("background task failed", exc_info=task.exception())

        asyncio.ensure_future(work).add_done_callback(report)

    async def reload(self, reason: str = "requested") -> ReloadOutcome:
        """Build and check a whole new configuration off the event loop; swap it in at once, or keep
        the running one and report why (log, answer, metric, error.config.invalid)."""
        async with self._reload_lock:
            if self.state is not DaemonState.RUNNING or self.configuration is None:
                return ReloadOutcome(False, ["the daemon is not running"])
            dispatcher, http, bus, scheduler = self.dispatcher, self.http, self.bus, self.scheduler
            if dispatcher is None or http is None or bus is None or scheduler is None:
                return ReloadOutcome(False, ["the daemon is still starting"])
            self.notifier.reloading()
            result = await asyncio.to_thread(load, self.settings_path, mode=LoadMode.DAEMON)
            applied = self.applied
            assert applied is not None, "serve() applies the first configuration before anything can reload"
            blocking = applied.blocking(result)
            problems = [str(p) for p in blocking]
            new = result.configuration
            if new is None or blocking:
                self.last_reload = ReloadRecord(self.clock.now(), reason, False, tuple(blocking))
                self.reloads["rejected"] += 1
                METRICS.reloads.labels("rejected").inc()
                METRICS.config_valid.set(0)
                for problem in problems:
                    log.error("reload rejected: %s", problem)
                bus.emit(
                    Event(
                        new_event_id(),
                        "error.config.invalid",
                        "system",
                        isoformat(self.clock.now()),
                        {"reason": reason, "problems": problems},
                        "high",
                    )
                )
                self.notifier.ready(self._status())
                return ReloadOutcome(False, problems)
            old = self.configuration
            if (new.settings.server, new.settings.admin, new.settings.store) != (
                old.settings.server,
                old.settings.admin,
                old.settings.store,
            ):
                log.warning("server, admin and store settings changed: they apply at the next restart")
                new = Configuration(
                    replace(
                        new.settings, server=old.settings.server, admin=old.settings.admin, store=old.settings.store
                    ),
                    new.triggers,
                    new.agents,
                    new.files,
                    new.sources,
                )
            # The swap: no await between these lines, so no request sees a mix of old and new.
            self.configuration = new
            self._applied(Applied(LoadResult(new, result.problems, result.digests), self.clock.now()))
            self.last_reload = ReloadRecord(self.clock.now(), reason, True)
            dispatcher.configuration = new
            http.webhooks.reconfigure(new)
            scheduler.reconfigure()
            await bus.reconfigure(new)
            cancelled = await dispatcher.reconfigure(new)
            if self.sources is not None:
                await self.sources.reconfigure(new)
            self.reloads["applied"] += 1
            METRICS.reloads.labels("applied").inc()
            METRICS.config_valid.set(1)
            changes = _difference(old, new)
            log.info("reloaded (%s): %s; %d queued runs of removed triggers cancelled", reason, changes, cancelled)
            for left_out in result.errors:
                log.warning("still left out: %s", left_out, extra={"file": left_out.file, "line": left_out.line})
            bus.emit(
                Event(
                    new_event_id(),
                    "system.config.reloaded",
                    "system",
                    isoformat(self.clock.now()),
                    {"reason": reason, "changes": changes},
                )
            )
            self.notifier.ready(self._status())
            return ReloadOutcome(True, [])

    def _applied(self, applied: Applied) -> None:
        self.applied = applied
        for severity, count in applied.problem_counts().items():
            METRICS.config_problems.labels(str(severity)).set(count)

    def config_report(self) -> dict[str, Any]:
        """GET /v1/config: the running configuration's files and problems, when it was applied,
        and how the last reload went."""
        assert self.applied is not None, "the admin API starts after the first configuration is applied"
        last = self.last_reload
        return {
            **self.applied.to_json(),
            "reloads": dict(self.reloads),
            "last_reload": last.to_json() if last is not None else None,
        }

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


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    applied: bool
    problems: list[str]


def _difference(old: Configuration, new: Configuration) -> str:
    def changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[int, int, int]:
        added = len(set(b) - set(a))
        removed = len(set(a) - set(b))
        modified = sum(a[k].fingerprint != b[k].fingerprint for k in set(a) & set(b))
        return added, removed, modified

    t, g, s = changed(old.triggers, new.triggers), changed(old.agents, new.agents), changed(old.sources, new.sources)
    return f"triggers +{t[0]} -{t[1]} ~{t[2]}, agents +{g[0]} -{g[1]} ~{g[2]}, sources +{s[0]} -{s[1]} ~{s[2]}"


def run_daemon(settings_path: Path | None) -> int:
    """`triggerd run`: serve until stopped; a store or port that cannot be opened exits 1."""
    logging.basicConfig(level=logging.INFO)
    try:
        return asyncio.run(Daemon(settings_path).serve())
    except (StoreError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
