"""What the two Redis source types (redis_stream.py, redis_list.py) share: the connection to the
server, its errors named without the URL's password, and its closing."""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

from triggerd.sources.brokers.abc import BrokerError, display_url

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0  # well above one blocking read, so a silent network partition ends in an error


class RedisClient:
    """A Redis connection opened by `connect()`, reached through `_connected()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Redis | None = None

    def _error(self, action: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"{action} on {display_url(self.url)} failed: {exc.__class__.__name__}: {exc}")

    def _connected(self) -> Redis:
        if self.client is None:
            raise BrokerError("not connected")
        return self.client

    async def connect(self) -> None:
        try:
            self.client = Redis.from_url(
                self.url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=READ_TIMEOUT, socket_keepalive=True
            )
            await self.client.ping()
        except (RedisError, OSError, ValueError) as exc:
            raise self._error("connecting", exc) from None

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()
            self.client = None
