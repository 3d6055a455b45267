"""The anthropic agent: the Messages API through the official SDK, our retries only.

Without tools an attempt is one call. With tools (SPEC 5.1) it is the tool-use loop: while
the model stops for `tool_use`, each tool_use block runs (tools.py) and the tool_result
blocks go back, up to max_turns calls; the final text is the output.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import anthropic
import anthropic.resources.messages

from triggerd.agents.abc import MAX_DEPTH, AgentBackend, AgentRequest, AgentResult, nested_deeper, parse_output
from triggerd.agents.tools import ToolBox, add_usage
from triggerd.config.models import AnthropicAgent, AnyAgent
from triggerd.errors import AgentFailure, TemplateError

_RETRYABLE_STATUS = frozenset({408, 409, 429})


class AnthropicBackend:
    def __init__(self, agent: AnthropicAgent, backends: Callable[[AnyAgent], AgentBackend]) -> None:
        self.agent = agent
        self.toolbox = ToolBox(agent.tools, backends) if agent.tools else None
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
        if self.toolbox is not None:
            return await self._converse(request, params, self.toolbox)
        message = await self._create(params)
        text = "".join(block.text for block in message.content if block.type == "text")
        output = {"text": text, "model": message.model, "stop_reason": message.stop_reason, "id": message.id}
        request.transcript.usage = message.usage.model_dump(exclude_none=True)
        return AgentResult(output, request.transcript.usage)

    async def _converse(self, request: AgentRequest, params: dict[str, Any], toolbox: ToolBox) -> AgentResult:
        """The tool-use loop of one attempt: a retry starts it afresh from the prompt."""
        params["tools"] = self.agent.tool_definitions()
        messages: list[dict[str, Any]] = params["messages"]
        transcript = request.transcript
        for turn in range(1, self.agent.max_turns + 1):
            message = await self._create(params)
            transcript.usage = add_usage(transcript.usage, message.usage.model_dump(exclude_none=True))
            uses = [block for block in message.content if block.type == "tool_use"]
            if message.stop_reason != "tool_use" or not uses:
                text = "".join(block.text for block in message.content if block.type == "text")
                return AgentResult(parse_output(text), transcript.usage)
            if turn == self.agent.max_turns:
                break  # no model call is left to read what the tools would answer: run none
            for use in uses:
                if nested_deeper(use.input, MAX_DEPTH):
                    # The turn cannot even be sent back; the same prompt would lead there again.
                    raise AgentFailure(
                        f"the model's input for tool '{use.name}' is nested deeper than {MAX_DEPTH} levels",
                        retryable=False,
                    )
            messages.append(
                {
                    "role": "assistant",
                    "content": [block.to_dict(mode="json", exclude_none=True) for block in message.content],
                }
            )
            # One after another, in the model's order: a tool may act on what the one before did.
            results = [await toolbox.call(request, turn, use.id, use.name, use.input) for use in uses]
            messages.append({"role": "user", "content": results})
        raise AgentFailure(
            f"max_turns ({self.agent.max_turns}) reached and the model still asked for a tool",
            retryable=False,
            reason="max_turns",
        )

    async def _create(self, params: dict[str, Any]) -> anthropic.types.Message:
        keywords, extra = split_params(params)
        if extra:
            keywords["extra_body"] = {**keywords.get("extra_body", {}), **extra}
        try:
            message: anthropic.types.Message = await self.client().messages.create(**keywords)
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
        return message

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
