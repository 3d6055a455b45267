"""The anthropic agent: one Messages API call through the official SDK, our retries only."""

from __future__ import annotations

import inspect
import json
from functools import cache
from typing import Any

import anthropic
import anthropic.resources.messages

from triggerd.agents.abc import AgentRequest, AgentResult
from triggerd.config.models import AnthropicAgent
from triggerd.errors import AgentFailure, TemplateError

_RETRYABLE_STATUS = frozenset({408, 409, 429})


class AnthropicBackend:
    def __init__(self, agent: AnthropicAgent) -> None:
        self.agent = agent
        self._client: anthropic.AsyncAnthropic | None = None

    def client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                api_key=self.agent.api_key.reveal() if self.agent.api_key else None,
                base_url=self.agent.base_url,
                max_retries=0,  # the trigger's retry policy is the only one
                timeout=None,  # the dispatcher's per-attempt timeout cancels the call
            )
        return self._client

    def prompt(self, request: AgentRequest) -> str:
        if self.agent.prompt is None:
            return json.dumps(dict(request.input), ensure_ascii=False, indent=2)
        try:
            return self.agent.prompt.render(request.input)
        except TemplateError as exc:
            raise AgentFailure(str(exc), retryable=False) from None

    async def run(self, request: AgentRequest) -> AgentResult:
        params: dict[str, Any] = {
            **self.agent.params,
            "model": self.agent.model,
            "max_tokens": self.agent.max_tokens,
            "messages": [{"role": "user", "content": self.prompt(request)}],
        }
        if self.agent.system is not None:
            params["system"] = self.agent.system
        if self.agent.temperature is not None:
            params["temperature"] = self.agent.temperature
        keywords, extra = split_params(params)
        if extra:
            keywords["extra_body"] = {**keywords.get("extra_body", {}), **extra}
        try:
            message = await self.client().messages.create(**keywords)
        except anthropic.APIStatusError as exc:
            retryable = exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
            raise AgentFailure(
                f"Anthropic API answered {exc.status_code}: {_error_text(exc)}", retryable=retryable
            ) from None
        except anthropic.APIConnectionError as exc:
            raise AgentFailure(f"Anthropic API unreachable: {exc.__class__.__name__}: {exc}", retryable=True) from None
        except TypeError as exc:
            # The SDK raises TypeError at request time when it finds no credentials.
            raise AgentFailure(f"Anthropic client not usable: {exc}", retryable=False) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        output = {"text": text, "model": message.model, "stop_reason": message.stop_reason, "id": message.id}
        usage = message.usage.model_dump(exclude_none=True)
        return AgentResult(output, usage)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@cache
def _create_keywords() -> frozenset[str]:
    signature = inspect.signature(anthropic.resources.messages.AsyncMessages.create)
    return frozenset(name for name in signature.parameters if name != "self")


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split request fields into those this SDK's create() takes as keywords and the rest.

    The rest (a field this SDK release does not name, such as `temperature` in
    SDK 2.x, or one newer than it) is sent as-is in the request body through
    `extra_body`, so `params` passes through whatever the SDK version.
    """
    known = _create_keywords()
    return ({k: v for k, v in params.items() if k in known}, {k: v for k, v in params.items() if k not in known})


def _error_text(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return f"{error.get('type', 'error')}: {error['message']}"
    return exc.message
