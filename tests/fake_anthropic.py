"""A small stand-in for the Messages API on loopback: it checks requests and answers from a script.

A reply may ask for tools (`tool_uses`), as the real API does with `stop_reason: "tool_use"`;
the fake then checks, as the real API does, that the next request answers every tool_use block
of every assistant turn with a tool_result block, names only tools the request defines, and
names them as the real API allows.
"""

from __future__ import annotations

import asyncio
import json
import re
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
    tool_uses: list[tuple[str, Any]] = field(default_factory=list)  # (tool name, input) blocks to answer with


class FakeMessagesAPI:
    """POST /v1/messages answered from `replies` in order; every request is kept in `requests`."""

    def __init__(self, replies: list[Reply], api_key: str = "test-key") -> None:
        self.replies = list(replies)
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.echoed: list[dict[str, Any]] = []  # requests to /echo
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
        problem = conversation_problem(body)
        if problem is not None:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}, status=400
            )
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return web.json_response(
                {"type": "error", "error": {"type": reply.error_type, "message": "Overloaded"}}, status=reply.status
            )
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
        for index, (name, tool_input) in enumerate(reply.tool_uses):
            content.append(
                {"type": "tool_use", "id": f"toolu_{len(self.requests):02d}_{index}", "name": name, "input": tool_input}
            )
        return web.json_response(
            {
                "id": f"msg_{len(self.requests):04d}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "tool_use" if reply.tool_uses else "end_turn",
                "stop_sequence": None,
                "usage": reply.usage,
            }
        )

    async def echo(self, request: web.Request) -> web.Response:
        """An http agent's endpoint beside the API (for http tools): answers what it was sent."""
        body = await request.json()
        self.echoed.append({"headers": dict(request.headers), "body": body})
        return web.json_response({"echo": body["input"]})

    def __enter__(self) -> FakeMessagesAPI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/echo", self.echo)
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

    def tool_results(self, request: int) -> list[dict[str, Any]]:
        """The tool_result blocks of request `request`'s last message (the answers to the reply before)."""
        content = self.bodies()[request]["messages"][-1]["content"]
        return [block for block in content if isinstance(block, dict) and block.get("type") == "tool_result"]


def conversation_problem(body: dict[str, Any]) -> str | None:
    """Why the real API would refuse this conversation's tool blocks, or None."""
    defined = {tool.get("name") for tool in body.get("tools", [])}
    misnamed = sorted(str(name) for name in defined if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", str(name)))
    if misnamed:
        return f"tools: names must match ^[a-zA-Z0-9_-]{{1,64}}$: {misnamed}"
    messages = body["messages"]
    for index, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        uses = {block["id"]: block["name"] for block in content if block.get("type") == "tool_use"}
        if not uses:
            continue
        unknown = sorted(name for name in uses.values() if name not in defined)
        if unknown:
            return f"messages.{index}: tool_use of tools the request does not define: {unknown}"
        answer = messages[index + 1] if index + 1 < len(messages) else None
        blocks = answer.get("content") if answer is not None and answer.get("role") == "user" else None
        results = [b for b in blocks if b.get("type") == "tool_result"] if isinstance(blocks, list) else []
        answered = [b.get("tool_use_id") for b in results]
        if sorted(answered) != sorted(uses):
            return f"messages.{index + 1}: tool_use ids {sorted(uses)} must each have one tool_result, got {answered}"
        for block in results:
            if not isinstance(block.get("content"), str) or not isinstance(block.get("is_error", False), bool):
                return f"messages.{index + 1}: a tool_result's content must be text here, and is_error a boolean"
    return None
