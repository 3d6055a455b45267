"""`sse` sources (SPEC 5.4): a Server-Sent Events endpoint read with aiohttp's own client.

The response (`text/event-stream`) is parsed as the HTML standard's event-stream
interpretation says: lines end in CRLF, LF or CR; `data:` lines join with LF; `event:` names
the type; `id:` sets the last event id (kept across events until another id: line); `retry:`
sets the reconnection time; a line starting with ":" is a comment; an empty line dispatches the
event, unless its data is empty.

An event stream has no acknowledgement: acknowledging an event is saving the last event id in
the store (source cursors) after the commit, and a connection sends it back as `Last-Event-ID`,
so a daemon that restarts resumes after the last event it committed. An event the server
repeats after a crash keeps its id, which the store's dedupe recognises.

The broker id is the event's own `id:` when it has one. An event without one has no identity a
repetition would keep: its broker id is unique, so it is never taken for a duplicate (give
`event.id` a path into the data if the server repeats such events).

`retry:` is honoured within the runner's backoff caps: the next connection waits at least the
server's retry time, at most BACKOFF_CAP, counted from the end of the previous connection.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp

from triggerd.clock import isoformat
from triggerd.config.models import SourceDefinition
from triggerd.errors import StoreError, Unavailable
from triggerd.sources.brokers.abc import BrokerContext, BrokerError, Message, display_url
from triggerd.sources.brokers.runner import BACKOFF_CAP

CONNECT_TIMEOUT = 10.0
# A stream silent this long is taken for a dead connection; servers send comments as keepalives
# far more often than this.
READ_TIMEOUT = 300.0
LINE_END = re.compile(r"\r\n|\r|\n")
# What is kept of one line, and of one event's data; the rest is dropped, so the daemon never
# buffers without end and the event still reaches the runner, which makes it a dead letter for its
# size (above server.max_body_bytes, 1 MiB by default) rather than failing the stream at it forever.
MAX_EVENT_BYTES = 16 * 1024 * 1024

# The server's `retry:` and when the previous connection ended, by source id: a Broker lives for
# one connection, and the wait belongs between two of them.
_RETRY: dict[str, tuple[float, float]] = {}


def create(source: SourceDefinition, context: BrokerContext) -> Sse:
    return Sse(source, context)


class Sse:
    def __init__(self, source: SourceDefinition, context: BrokerContext) -> None:
        self.source = source
        self.url = source.url.reveal()
        self.headers = {str(k): str(v) for k, v in dict(source.options["headers"]).items()}
        self.cursors = context.cursors
        self.session: aiohttp.ClientSession | None = None
        self.response: aiohttp.ClientResponse | None = None
        self.retry: float | None = None
        self.saved: str | None = None

    def _error(self, action: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"{action} on {display_url(self.url)} failed: {exc.__class__.__name__}: {exc}")

    async def connect(self) -> None:
        retry, ended = _RETRY.get(self.source.id, (0.0, 0.0))
        wait = min(retry, BACKOFF_CAP) - (time.monotonic() - ended)
        if wait > 0:
            await asyncio.sleep(wait)
        self.saved = await self.cursors.source_cursor(self.source.id)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self.headers}
        if self.saved:
            headers["Last-Event-ID"] = self.saved
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        self.session = aiohttp.ClientSession(timeout=timeout)
        try:
            self.response = await self.session.get(self.url, headers=headers)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise self._error("connecting", exc) from None
        kind = self.response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if self.response.status != 200 or kind != "text/event-stream":
            raise BrokerError(
                f"connecting on {display_url(self.url)} failed: HTTP {self.response.status} {kind or 'no content type'}"
                " (an event stream answers 200 text/event-stream)"
            )

    async def _lines(self) -> AsyncIterator[str]:
        """The stream's lines, split at CRLF, LF or CR, decoded as UTF-8 (a bad byte replaced)."""
        assert self.response is not None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        cut = False  # inside a line longer than MAX_EVENT_BYTES, whose rest is dropped
        async for chunk in self.response.content.iter_any():
            text = decoder.decode(chunk)
            if cut:
                first = LINE_END.search(text)
                if first is None:
                    continue
                text, cut = text[first.start() :], False  # the line end stays: the cut line is yielded
            pending += text
            start = 0
            for end in LINE_END.finditer(pending):
                if end.group() == "\r" and end.end() == len(pending):
                    break  # a CR at the end of a chunk may be the first half of a CRLF
                yield pending[start : end.start()]
                start = end.end()
            pending = pending[start:]
            if len(pending) > MAX_EVENT_BYTES:
                # Keep the start, so the event is still one (a dead letter for its size), not a
                # stream that fails at the same event on every reconnection.
                pending, cut = pending[:MAX_EVENT_BYTES], True

    async def deliveries(self) -> AsyncIterator[list[Message]]:
        last_id = self.saved or ""
        data: list[str] = []
        size = 0
        kind = ""
        own_id: str | None = None
        try:
            async for line in self._lines():
                if line == "":
                    if data:
                        yield [self._message(kind or "message", "\n".join(data), own_id, last_id)]
                    data, size, kind, own_id = [], 0, "", None
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    if size <= MAX_EVENT_BYTES:  # beyond, the event is a dead letter for its size anyway
                        data.append(value)
                        size += len(value) + 1
                elif name == "event":
                    kind = value
                elif name == "id" and "\0" not in value:
                    last_id = value
                    own_id = value or None
                elif name == "retry" and value.isascii() and value.isdigit():
                    self.retry = int(value) / 1000
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._error("reading", exc) from None
        raise BrokerError(f"reading on {display_url(self.url)} failed: the server ended the stream")

    def _message(self, kind: str, data: str, own_id: str | None, last_id: str) -> Message:
        return Message(
            broker_id=own_id or "sse-" + secrets.token_hex(12),
            body=data.encode(),
            headers={"event": kind, "last_event_id": last_id},
            context={"url": display_url(self.url)},
            handle=last_id,
        )

    async def acknowledge(self, delivery: list[Message]) -> None:
        cursor: str = delivery[-1].handle  # the last event id seen up to the delivery's last message
        if not cursor or cursor == self.saved:
            return
        try:
            await self.cursors.save_source_cursor(self.source.id, cursor, isoformat(datetime.now(UTC)))
        except (StoreError, Unavailable) as exc:
            raise BrokerError(f"saving the last event id failed: {exc}") from None
        self.saved = cursor

    async def lag(self) -> int | None:
        return None  # an event stream does not say how much is waiting

    async def close(self) -> None:
        if self.retry is not None or self.source.id in _RETRY:
            retry = self.retry if self.retry is not None else _RETRY[self.source.id][0]
            _RETRY[self.source.id] = (retry, time.monotonic())
        if self.response is not None:
            self.response.release()
            self.response = None
        if self.session is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self.session.close()
            self.session = None
