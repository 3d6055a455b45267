"""The HTTP server: one site for webhooks (and /v1 unless admin.listen is set), one for admin if set."""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from triggerd.clock import Clock
from triggerd.config.models import Listen, Settings
from triggerd.console import add_console
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.http.admin import add_admin_routes
from triggerd.http.connections import AcceptErrors, ConnectionPool, Runner, connection_limit
from triggerd.http.responses import json_response, never_500
from triggerd.http.webhooks import WebhookHandler
from triggerd.metrics import METRICS
from triggerd.sources.bus import EventBus

log = logging.getLogger("triggerd.http")

ReadinessCheck = Callable[[], Awaitable[list[str]]]
ScheduleState = Callable[[str], dict[str, Any] | None]
Reload = Callable[[str], Awaitable[Any]]


class HttpServer:
    """Starts and stops the sites; `readiness` returns why the daemon is not ready (empty: ready)."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        readiness: ReadinessCheck,
        clock: Clock,
        accepting: Callable[[], bool],
        schedules: ScheduleState | None = None,
        events: EventBus | None = None,
        reload: Reload | None = None,
        config: Callable[[], dict[str, Any]] | None = None,
        sources: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.readiness = readiness
        self.schedules = schedules
        self.events = events
        self.reload = reload
        self.config = config
        self.sources = sources
        self.webhooks = WebhookHandler(dispatcher, settings, clock, accepting)
        self._runners: list[web.AppRunner] = []
        self.urls: list[str] = []
        server = settings.server
        self.pool = ConnectionPool(
            connection_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            server.read_timeout,
            server.keepalive_timeout,
        )
        self._restore_exception_handler: Callable[[], None] | None = None

    def _app(self, *, admin: bool, webhooks: bool) -> web.Application:
        app = web.Application(middlewares=[never_500], client_max_size=self.settings.server.max_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        if admin:
            tokens = tuple(t.reveal() for t in self.settings.admin.tokens)
            add_admin_routes(
                app, self.dispatcher, tokens, self.schedules, self.events, self.reload, self.config, self.sources
            )
            add_console(app)
        if webhooks:
            self.webhooks.mount(app)  # last: its catch-all must not shadow the routes above
        return app

    async def start(self) -> None:
        self._restore_exception_handler = AcceptErrors(asyncio.get_running_loop()).install()
        log.info(
            "connections: at most %d open, read_timeout %gs, keepalive_timeout %gs",
            self.pool.limit,
            self.pool.read_timeout,
            self.pool.keepalive_timeout,
        )
        separate_admin = self.settings.admin.listen is not None
        await self._serve(self._app(admin=not separate_admin, webhooks=True), self.settings.server.listen)
        if self.settings.admin.listen is not None:
            await self._serve(self._app(admin=True, webhooks=False), self.settings.admin.listen)

    async def _serve(self, app: web.Application, listen: Listen) -> None:
        runner = Runner(app, self.pool)  # both listeners share one pool: descriptors are the process's
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            self.urls.append(url)
            log.info("listening on %s", url)

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        if self._restore_exception_handler is not None:
            self._restore_exception_handler()
            self._restore_exception_handler = None

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=METRICS.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self.readiness()
        if problems:
            return json_response({"status": "unavailable", "problems": problems}, status=503)
        return json_response({"status": "ready"})
