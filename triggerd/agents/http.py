"""The http agent: POST the run to an endpoint; 2xx succeeds, 4xx fails for good, 5xx may retry.

Its errors name only the URL's scheme, host and port (SPEC 2.3): Slack and Discord webhook URLs,
among others, carry their secret in the path or query.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from yarl import URL

from triggerd.agents.abc import AgentRequest, AgentResult, parse_output
from triggerd.config.models import HttpAgent
from triggerd.errors import AgentFailure

MAX_RESPONSE_BYTES = 1_048_576
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without user, password, path, query or fragment."""
    try:
        parsed = URL(url)
        return str(parsed.origin()) if parsed.absolute else "<relative URL>"
    except ValueError:
        return "<invalid URL>"


def without_paths(text: str) -> str:
    """text with every URL in it cut to its origin (aiohttp's messages quote the whole URL)."""
    return _URL.sub(lambda m: origin(m.group(0)), text)


class HttpBackend:
    def __init__(self, agent: HttpAgent) -> None:
        self.agent = agent
        self.target = f"{agent.method} {origin(agent.url)}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No total timeout here: the dispatcher's per-attempt timeout cancels the request.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=30))
        return self._session

    async def run(self, request: AgentRequest) -> AgentResult:
        body = {
            "run_id": request.run_id,
            "trigger_id": request.trigger_id,
            "agent_id": request.agent_id,
            "attempt": request.attempt,
            "input": request.input,
        }
        headers = {k: v.reveal() for k, v in self.agent.headers.items()}
        try:
            async with self._client().request(self.agent.method, self.agent.url, json=body, headers=headers) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            # Its message names host and port only, but its strerror is all that is news.
            raise AgentFailure(
                f"{self.target} failed: cannot connect: {exc.strerror or exc.os_error.__class__.__name__}",
                retryable=True,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = without_paths(str(exc))
            raise AgentFailure(
                f"{self.target} failed: {exc.__class__.__name__}" + (f": {detail}" if detail else ""), retryable=True
            ) from None
        output = _parse(raw[:MAX_RESPONSE_BYTES])
        if 200 <= status < 300:
            return AgentResult(output)
        retryable = status >= 500 or status in (408, 429)
        raise AgentFailure(f"{self.target} answered {status}", retryable=retryable, output=output)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _parse(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    return parse_output(text) if text else None
