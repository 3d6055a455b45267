"""GET /ui/events: the runs page's live feed, as server-sent events.

Every POLL_SECONDS the stream reads the runs the page lists (list_runs with the page's filters,
the query GET /v1/runs answers from; or one run, for its detail page) and sends each run that
is new or changed since the last read (its status, or a tool call started or ended) as an
`event: run` whose data is the row's HTML. The
store is what every daemon sharing it writes to, so runs another daemon started show too.
A comment every KEEPALIVE_SECONDS keeps proxies from closing an idle stream; the stream ends
when the daemon shuts down or its session ends (sign-out, expiry).

Each open stream costs one store query a second, so at most MAX_FEEDS are open at once; one more
is a 503 (the page then says its live updates are off). What a stream remembers is bounded too:
the runs of its last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from triggerd.console.access import SESSION, SESSIONS, Session
from triggerd.console.pages import list_filtered, run_filters
from triggerd.console.render import progress, run_row
from triggerd.errors import StoreError
from triggerd.http.admin import DISPATCHER
from triggerd.masking import dumps

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
MAX_FEEDS = 20  # a few operators with a few tabs each; 20 queries a second at most
STOPPING = web.AppKey("console_stopping", asyncio.Event)
FEEDS = web.AppKey("console_feeds", set[web.StreamResponse])


async def _stop(app: web.Application) -> None:
    app[STOPPING].set()


def install(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app[FEEDS] = set()
    app.on_shutdown.append(_stop)


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _signature(run: Any) -> tuple[Any, ...]:
    return (run.status, run.reason, len(run.attempts), run.finished_at, run.dead_letter, progress(run))


async def events(request: web.Request) -> web.StreamResponse:
    filters = run_filters(request)
    run_id = request.query.get("run")
    store = request.app[DISPATCHER].store
    feeds = request.app[FEEDS]
    if len(feeds) >= MAX_FEEDS:
        raise web.HTTPServiceUnavailable(text=f"{MAX_FEEDS} live feeds are open already; reload later")
    session: Session = request[SESSION]
    sessions = request.app[SESSIONS]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    stopping = request.app[STOPPING]
    seen: dict[str, tuple[Any, ...]] = {}
    quiet_since = time.monotonic()
    feeds.add(response)  # before the first await: the bound holds however many arrive at once
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        # A browser that left is noticed here, not only at the next write: its place is free within a poll.
        while not stopping.is_set() and sessions.get(session.id) is not None and not _gone(request):
            found: list[Any] | None
            try:
                if run_id is not None:
                    run = await store.get_run(run_id)
                    found = [run] if run is not None else []
                else:
                    found = await list_filtered(request, filters)
            except StoreError:
                found = None  # the page keeps what it shows; the next read may find the store again
            if found is not None:
                last, seen = seen, {}  # only the runs of this read: what the stream keeps is bounded
                for run in reversed(found):  # oldest first: each new row goes on top of the one before
                    signature = seen[run.id] = _signature(run)
                    if last.get(run.id) != signature:
                        data = dumps(
                            {"id": run.id, "status": str(run.status), "progress": progress(run), "html": run_row(run)}
                        )
                        await response.write(f"event: run\ndata: {data}\n\n".encode())
                        quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                await response.write(b": keepalive\n\n")
                quiet_since = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL_SECONDS)
    except ConnectionResetError:
        pass  # the browser left
    finally:
        feeds.discard(response)
    return response
