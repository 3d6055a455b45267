"""A small stand-in for the Messages API on loopback: it checks requests and answers from a script."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.harness import free_port


@dataclass
class Reply:
    status: int = 200
    text: str = "Hello from the fake."
    delay: float = 0.0
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 12, "output_tokens": 5})
    error_type: str = "overloaded_error"


class FakeMessagesAPI:
    """POST /v1/messages answered from `replies` in order; every request is kept in `requests`."""

    def __init__(self, replies: list[Reply], api_key: str = "test-key") -> None:
        self.replies = list(replies)
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        offered = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if offered != self.api_key:
            return web.json_response(
                {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}, status=401
            )
        missing = [k for k in ("model", "max_tokens", "messages") if k not in body]
        if missing or "anthropic-version" not in request.headers:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": f"missing {missing}"}},
                status=400,
            )
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return web.json_response(
                {"type": "error", "error": {"type": reply.error_type, "message": "Overloaded"}}, status=reply.status
            )
        return web.json_response(
            {
                "id": f"msg_{len(self.requests):04d}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": reply.text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": reply.usage,
            }
        )

    def __enter__(self) -> FakeMessagesAPI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(json.dumps(r["body"])) for r in self.requests]
