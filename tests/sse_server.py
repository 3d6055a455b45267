"""A small Server-Sent Events endpoint for the sse source tests: a real aiohttp server on a free
loopback port, in a thread of its own, that serves the events pushed so far and then waits
for more. A request with Last-Event-ID gets only the events after that id (what a server that
supports resuming does); every request's Last-Event-ID is recorded. stop() and start() take it
away and bring it back with its events kept."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from aiohttp import web

from tests.harness import free_port


class SseServer:
    def __init__(self, retry_ms: int = 100) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.retry_ms = retry_ms
        self.events: list[tuple[str | None, str]] = []  # (id, raw lines of the event)
        self.resumed_from: list[str | None] = []
        self.requested_at: list[float] = []  # time.monotonic() of each request
        self.request_headers: list[dict[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.changed: asyncio.Condition | None = None
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.start()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        assert self.changed is not None
        self.requested_at.append(time.monotonic())
        self.request_headers.append(dict(request.headers))
        last = request.headers.get("Last-Event-ID")
        self.resumed_from.append(last)
        ids = [i for i, _ in self.events]
        sent = ids.index(last) + 1 if last in ids else 0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"retry: {self.retry_ms}\n: a comment\n\n".encode())
        while True:
            while sent < len(self.events):
                await response.write(self.events[sent][1].encode())
                sent += 1
            async with self.changed:
                await self.changed.wait_for(lambda seen=sent: seen < len(self.events))

    async def _start(self) -> None:
        self.changed = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/events", self._serve)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _cancel_rest(self) -> None:
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _push(self, event_id: str | None, lines: str) -> None:
        assert self.changed is not None
        self.events.append((event_id, lines))
        async with self.changed:
            self.changed.notify_all()

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def push_raw(self, text: str, event_id: str | None = None) -> None:
        """Bytes of the stream as given (`event_id` is what a resume from it skips to)."""
        self._call(self._push(event_id, text))

    def push(self, data: str, event_id: str | None = None, kind: str | None = None) -> None:
        """One event: its `id:` and `event:` lines when given, its data split into data: lines."""
        lines: Sequence[str] = [
            *([f"id: {event_id}"] if event_id is not None else []),
            *([f"event: {kind}"] if kind is not None else []),
            *(f"data: {line}" for line in data.split("\n")),
        ]
        self._call(self._push(event_id, "\r\n".join(lines) + "\r\n\r\n"))

    def close(self) -> None:
        self.stop()
        self._call(self._cancel_rest())  # a stream handler still waiting for events
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
