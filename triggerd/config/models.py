"""Frozen, typed configuration models. Durations are float seconds throughout."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from triggerd.conditions import Condition
from triggerd.mapping import JsonPath, Template

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a definition was written: shown in every message about it."""

    file: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be logged or returned: its repr and str hide it."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        return self.value

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# --- settings (SPEC 2.1) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: Listen = Listen("127.0.0.1", 8080)
    max_body_bytes: int = 1_048_576
    trusted_proxies: tuple[IPNetwork, ...] = ()
    read_timeout: float = 30.0  # a request's head and body must arrive within this
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this


@dataclass(frozen=True, slots=True)
class AdminSettings:
    listen: Listen | None = None
    tokens: tuple[Secret, ...] = ()


class SyncLevel(StrEnum):
    NORMAL = "normal"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str
    retention: float = 30 * 86400.0
    sync: SyncLevel = SyncLevel.NORMAL
    instance: str = ""  # this daemon's name among those sharing the store; "" means host:pid
    lease: float = 30.0  # a claimed run's lease, renewed every third of it (SPEC 10)
    pool_size: int = 10  # PostgreSQL connections for reads


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent_runs: int = 16
    shutdown_grace_seconds: float = 30.0
    max_event_chain_depth: int = 8


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class Settings:
    """The daemon's settings file, with every default applied and paths made absolute."""

    path: Path | None
    base_dir: Path
    server: ServerSettings
    admin: AdminSettings
    store: StoreSettings
    definitions: tuple[str, ...]
    limits: Limits
    logging: LoggingSettings


# --- agents (SPEC 5.1) -------------------------------------------------------


DEFAULT_MAX_TURNS = 10  # model calls per attempt of an agent with tools (SPEC 5.1)


class AgentType(StrEnum):
    ANTHROPIC = "anthropic"
    COMMAND = "command"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending ceiling (SPEC 12), on a trigger or across an agent's triggers; None: no ceiling."""

    tokens_per_day: int | None = None  # Anthropic input + output tokens recorded on runs, sliding day
    runs_per_hour: int | None = None  # runs (not skipped) created, sliding hour


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """What every agent has; the backend's own fields are on the subclasses."""

    id: str
    name: str | None
    description: str | None
    type: AgentType
    max_concurrent: int | None
    timeout_seconds: float | None
    origin: Origin
    fingerprint: str
    budget: Budget | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnthropicAgent(Agent):
    model: str
    system: str | None
    prompt: Template | None
    max_tokens: int
    temperature: float | None
    params: Mapping[str, Any]
    api_key: Secret | None
    base_url: str | None
    tools: tuple[Tool, ...] = ()
    max_turns: int = DEFAULT_MAX_TURNS

    def tool_definitions(self) -> list[Any]:
        """The tools the model receives: the agent tools, then any the `params` name (server tools, say)."""
        return [*(tool.definition() for tool in self.tools), *self.params.get("tools", [])]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAgent(Agent):
    command: tuple[Template, ...]
    working_dir: str | None
    env: Mapping[str, Secret]
    max_output_bytes: int
    allow_option_args: bool = False  # option_args: allow

    def exposed_arguments(self) -> list[int]:
        """Indexes of the arguments a value from the input could turn into an option (SPEC 5.1).

        Those that begin with a placeholder, after the program and before any literal "--"
        (after it, a program reads nothing as an option).
        """
        exposed = []
        for index, template in enumerate(self.command[1:], start=1):
            if template.text == "--":
                break
            if template.parts and isinstance(template.parts[0], tuple):
                exposed.append(index)
        return exposed


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpAgent(Agent):
    url: str
    method: str
    headers: Mapping[str, Secret]


AnyAgent = AnthropicAgent | CommandAgent | HttpAgent
ToolAgent = CommandAgent | HttpAgent


@dataclass(frozen=True, slots=True)
class Tool:
    """One of an anthropic agent's tools (SPEC 5.1): another agent the model may call.

    `agent` is the named command or http agent, set by the loader once every definition is
    read (a definition on its own only knows the name).
    """

    name: str  # the tool agent's id, which is also the tool's name for the model
    description: str | None
    input_schema: Mapping[str, Any]
    agent: ToolAgent | None = None

    def definition(self) -> dict[str, Any]:
        """The tool as the Messages API receives it."""
        described = self.description if self.description is not None else (self.agent and self.agent.description)
        return {"name": self.name, "description": described or "", "input_schema": dict(self.input_schema)}


# --- triggers (SPEC 3) -------------------------------------------------------


class TriggerType(StrEnum):
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    EVENT = "event"


class Overlap(StrEnum):
    QUEUE = "queue"
    SKIP = "skip"
    REPLACE = "replace"


class AuthType(StrEnum):
    HMAC = "hmac"
    GITHUB = "github"
    GITLAB = "gitlab"
    SLACK = "slack"
    STRIPE = "stripe"
    STANDARD_WEBHOOKS = "standard-webhooks"
    SHOPIFY = "shopify"
    BEARER = "bearer"
    BASIC = "basic"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class MappingRule:
    """One input_mapping key: the JSONPath that computes it and what to do with no match."""

    key: str
    path: JsonPath
    required: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class AgentCall:
    """The trigger's agent: which one, and the input it is given."""

    id: str
    input: Mapping[str, Any]
    input_mapping: tuple[MappingRule, ...]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff: float = 10.0
    max_backoff: float = 600.0


@dataclass(frozen=True, slots=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    start_date: datetime | None = None
    end_date: datetime | None = None
    jitter_seconds: int = 0
    catchup_window: float = 3600.0


# SPEC 3.3: the generic hmac type on a header a provider owns is verified with that provider's
# scheme, since a provider never signs the bare body the way generic hmac reads it (Slack signs
# "v0:{timestamp}:{body}"). Keys are lower-case: header names compare case-insensitively.
# GitHub's older X-Hub-Signature ("sha1=<hex>") has no type of its own: it is GitHub's scheme over SHA-1.
PRESETS: Mapping[str, str] = {
    "x-slack-signature": "slack",
    "x-hub-signature-256": "github",
    "x-hub-signature": "github-sha1",
    "stripe-signature": "stripe",
    "x-shopify-hmac-sha256": "shopify",
    "webhook-signature": "standard-webhooks",
}


@dataclass(frozen=True, slots=True)
class Authentication:
    type: AuthType
    secrets: tuple[Secret, ...]
    header: str | None = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    username: str | None = None
    tolerance: float = 300.0

    @property
    def scheme(self) -> str:
        """The scheme a request is verified with: the type's own, except that generic hmac on a
        provider's header (PRESETS) is that provider's scheme entirely, delivery id included."""
        if self.type is AuthType.HMAC and self.header is not None:
            return PRESETS.get(self.header.lower(), self.type.value)
        return self.type.value


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    per: float


@dataclass(frozen=True, slots=True)
class StaticResponse:
    status: int = 202
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Webhook:
    endpoint: str
    method: str = "POST"
    authentication: Authentication | None = None
    ip_allowlist: tuple[IPNetwork, ...] = ()
    rate_limit: RateLimit | None = None
    max_body_bytes: int | None = None
    filter: Condition | None = None
    response: StaticResponse | None = None


@dataclass(frozen=True, slots=True)
class EventMatch:
    pattern: str
    sources: tuple[str, ...] = ()
    condition: Condition | None = None
    count_threshold: int | None = None
    window: float | None = None
    group_by: JsonPath | None = None


@dataclass(frozen=True, slots=True)
class Debounce:
    """A burst of firings (per key) runs once, with the last input, `period` after the last (SPEC 12)."""

    period: float
    key: JsonPath | None = None


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most `limit` runs started per `per` seconds (per key), counted at claim time (SPEC 12)."""

    limit: int
    per: float
    key: JsonPath | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    id: str
    name: str | None
    description: str | None
    type: TriggerType
    enabled: bool
    agent: AgentCall
    schedule: Schedule | None = None
    webhook: Webhook | None = None
    event: EventMatch | None = None
    max_concurrent: int = 1
    overlap: Overlap = Overlap.QUEUE
    max_queued: int = 100
    timeout_seconds: float = 3600.0
    retry: RetryPolicy = RetryPolicy()
    idempotency_key: JsonPath | None = None
    dedupe_window: float = 86400.0
    max_event_age: float | None = None
    concurrency_key: JsonPath | None = None
    debounce: Debounce | None = None
    throttle: Throttle | None = None
    budget: Budget | None = None
    origin: Origin
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Configuration:
    """A whole loaded configuration: what the daemon runs and `validate` checks."""

    settings: Settings
    triggers: Mapping[str, Trigger]
    agents: Mapping[str, AnyAgent]
    files: tuple[Path, ...] = ()
    sources: Mapping[str, SourceDefinition] = field(default_factory=dict)


# --- sources (SPEC 5.4) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventField:
    """One key of a source's `event:` mapping: a JSONPath on the message context, or a literal."""

    path: JsonPath | None = None
    literal: Any = None


@dataclass(frozen=True, slots=True)
class EventMapping:
    """How a message becomes an event (SPEC 5.4); a key left out takes the SPEC's default."""

    type: EventField | None = None
    id: EventField | None = None
    severity: EventField | None = None
    time: EventField | None = None
    data: EventField | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceDefinition:
    """A `source` document: a broker whose messages become events.

    `url` may carry credentials, so it is a Secret: only a broker module reveals it, and
    whatever is shown of it goes through `triggerd.sources.brokers.abc.display_url`.
    `options` holds the type's own keys (stream, group, start, field, claim_idle, list, queue,
    subject, durable, headers...), with durations already in seconds.
    """

    id: str
    type: str
    url: Secret
    enabled: bool
    options: Mapping[str, Any]
    event: EventMapping
    max_in_flight: int = 16
    dedupe_window: float = 86400.0
    origin: Origin
    fingerprint: str
