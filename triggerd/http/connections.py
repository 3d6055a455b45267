"""Bounded connections (SPEC 2.1, 7.1): read and keep-alive deadlines, a cap under the descriptor
limit, and a quiet log when descriptors run out anyway.

aiohttp 3.14's server has a keep-alive timeout (between requests) but no deadline on reading a
request: a client that sends one request line and then nothing keeps its descriptor until the
keep-alive timer (an hour by default) closes it, and a slow body is waited for without end.
`Connection` is aiohttp's own protocol with one per-connection timer added: it is armed when the
connection opens and when the first byte of a request arrives, and cancelled when the request's
head and body are all in; if it fires first, the connection is closed. Nothing else of aiohttp's
request handling changes, and no watchdog task walks the connections.

A read timeout alone does not keep the daemon answering: 1,000 idle clients hold 1,000
descriptors for the whole timeout, accept() fails with EMFILE, and the new request waits in the
kernel's backlog. So `ConnectionPool` keeps every connection of both listeners in one list, oldest
first, capped below the open-file limit (`connection_limit`): a connection past the cap closes
the oldest connection the daemon owes nothing (idle, or still sending its request) — a client
that is waiting for an answer is never cut off. Descriptors left over stay free for the store,
agents' pipes and outgoing HTTP, and accept() keeps working.

Should descriptors run out all the same, asyncio reports every failed accept() to the loop's
exception handler (in Python 3.11 up to `backlog` times per loop pass, then again every second);
`AcceptErrors` turns that into one log line per interval with a count.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

log = logging.getLogger("triggerd.http")

# Kept free of connections: asyncio accepts up to a listener's backlog (128) connections in one
# loop pass, and a connection is counted two passes later (a task, then `connection_made`) while
# the one it sheds closes its descriptor one pass after that; so a fast burst holds several
# backlogs' worth beyond the cap for a moment. Plus the store, agents' pipes and outgoing HTTP.
# A small limit keeps half of itself instead.
RESERVED_DESCRIPTORS = 512
REPORT_INTERVAL = 10.0
_OUT_OF_RESOURCE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard limit (SPEC 7.1), and log the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        log.info("open-file limit is %d", soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("open-file limit stays at %d: cannot raise it to %d: %s", soft, hard, exc)
        return
    log.info("open-file limit raised from %d to the hard limit %d", soft, hard)


def connection_limit(descriptors: int) -> int:
    """How many connections may be open at once under an open-file limit of `descriptors`."""
    if descriptors == resource.RLIM_INFINITY or descriptors <= 0:
        descriptors = 1 << 20
    return descriptors - min(RESERVED_DESCRIPTORS, descriptors // 2)


class Throttled:
    """A log line at most once per interval: the first occurrence at once, then, at the end of each
    interval that held any back, one line counting them (field `suppressed`). Call it on the loop."""

    def __init__(self, level: int, message: str, interval: float = REPORT_INTERVAL) -> None:
        self.level, self.message, self.interval = level, message, interval
        self._window: asyncio.TimerHandle | None = None
        self._held = 0

    def __call__(self, *args: Any) -> None:
        if self._window is not None:
            self._held += 1
            return
        log.log(self.level, self.message, *args)
        self._window = asyncio.get_running_loop().call_later(self.interval, self._close, args)

    def _close(self, args: tuple[Any, ...]) -> None:
        self._window = None
        if not self._held:
            return
        held, self._held = self._held, 0
        log.log(
            self.level,
            self.message + " (%d more times in the last %gs)",
            *args,
            held,
            self.interval,
            extra={"suppressed": held},
        )
        self._window = asyncio.get_running_loop().call_later(self.interval, self._close, args)


class AcceptErrors:
    """The loop's exception handler while the server runs: failed accept()s for want of descriptors
    are logged once per interval; everything else goes to the handler that was there before."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.previous = loop.get_exception_handler()
        self.report = Throttled(logging.ERROR, "out of file descriptors: cannot accept connections: %s")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if "socket" in context and isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCE:
            self.report(exc.strerror)
        elif self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def install(self) -> Callable[[], None]:
        """Install; returns what puts the previous handler back."""
        self.loop.set_exception_handler(self)
        return lambda: self.loop.set_exception_handler(self.previous)


class ConnectionPool:
    """Every open connection of the daemon's listeners, oldest first, at most `limit` of them."""

    def __init__(self, limit: int, read_timeout: float, keepalive_timeout: float) -> None:
        self.limit = limit
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self._open: dict[Connection, None] = {}  # insertion order: the oldest first
        self._shed = Throttled(
            logging.WARNING, "connection limit %d reached: closed the oldest idle connection (or the newest)"
        )

    def admit(self, connection: Connection) -> None:
        self._open[connection] = None
        if len(self._open) <= self.limit:
            return
        # The oldest connection owed nothing; if every one is being answered, the newcomer.
        victim = next((c for c in self._open if c.sheddable), connection)
        del self._open[victim]
        self._shed(self.limit)
        victim.force_close()

    def remove(self, connection: Connection) -> None:
        self._open.pop(connection, None)


class Connection(RequestHandler):
    """aiohttp's request handler plus the read deadline; see the module docstring."""

    def __init__(self, manager: web.Server, *, pool: ConnectionPool, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=pool.keepalive_timeout, **kwargs)
        self._pool = pool
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the newest request's body

    @property
    def sheddable(self) -> bool:
        """True while the daemon owes this client nothing: it is still sending a request, or idle."""
        if self.transport is None:  # already closed
            return False
        return self._deadline is not None or (self._waiter is not None and not self._waiter.done())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request is due within read_timeout of the connection's opening
        self._pool.admit(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._pool.remove(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        receiving_body = self._body is not None and not self._body.is_eof()
        parsed = self._request_count
        super().data_received(data)
        if self._upgraded:  # a WebSocket now: frames, not requests, and no deadline on them
            self._disarm()
            return
        if self._request_count != parsed and self._messages:
            self._body, receiving_body = self._messages[-1][1], True
        if receiving_body and self._body is not None and self._body.is_eof():
            # All of it is here: answering is the daemon's time, not the client's. (Bytes of a
            # next, pipelined request in the same chunk are then left to the keep-alive timer.)
            self._disarm()
        elif data:
            self._arm()  # the first byte of a request, or more of one: the deadline stands

    def _arm(self) -> None:
        if self._deadline is None and self.transport is not None:
            self._deadline = self._loop.call_later(self._pool.read_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        log.debug("closing a connection from %s: its request did not arrive within read_timeout", self.peername)
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # Malformed HTTP, a body aiohttp cannot decode (bad gzip, bad chunks), a client gone
        # mid-request: the client's doing, answered 400 (or nobody is left to answer), so a debug
        # line instead of a traceback at error level that anyone on the internet could provoke.
        if isinstance(kw.get("exc_info"), RequestPayloadError | HttpProcessingError | ConnectionResetError):
            log.debug("request from %s abandoned: %s", self.peername, kw["exc_info"])
            return
        super().log_exception(*args, **kw)


class Server(web.Server):
    """aiohttp's low-level server, making `Connection`s."""

    def __init__(self, handler: Any, request_factory: Any, pool: ConnectionPool) -> None:
        super().__init__(handler, request_factory=request_factory)
        self.pool = pool

    def __call__(self) -> RequestHandler:
        return Connection(self, loop=asyncio.get_running_loop(), pool=self.pool, access_log=None)


class Runner(web.AppRunner):
    """aiohttp's AppRunner serving through `Server`, so every connection gets the deadlines."""

    def __init__(self, app: web.Application, pool: ConnectionPool) -> None:
        super().__init__(app, handle_signals=False)
        self.pool = pool

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # runs the application's startup, as AppRunner does
        return Server(made.request_handler, made.request_factory, self.pool)
