"""Source documents (SPEC 5.4) -> SourceDefinition models, with the checks one document can make alone."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from triggerd.config.documents import Document
from triggerd.config.models import EventField, EventMapping, Origin, Secret, SourceDefinition
from triggerd.config.triggers import fingerprint
from triggerd.sources.brokers.abc import BROKER_TYPES

# The URL schemes each type's client accepts; anything else is a mistake worth a precise error.
SCHEMES = {
    "redis-stream": ("redis", "rediss", "unix"),
    "redis-list": ("redis", "rediss", "unix"),
    "amqp": ("amqp", "amqps"),
    "nats": ("nats", "tls", "ws", "wss"),
    "sse": ("http", "https"),
}
# The type's own keys and their defaults (durations as written; converted below).
OPTIONS: dict[str, dict[str, Any]] = {
    "redis-stream": {"stream": None, "group": "triggerd", "start": "$", "field": "body", "claim_idle": "5m"},
    "redis-list": {"list": None},
    "amqp": {"queue": None},
    "nats": {"subject": None, "stream": None, "durable": "triggerd", "ack_wait": "30s"},
    "sse": {"headers": {}},
}
DURATIONS = ("claim_idle", "ack_wait")
KNOWN_PRODUCERS = ("system", "agents", "api", "cli")  # SPEC 5.3: sources of events triggerd itself names


def build_source(doc: Document, source_id: str) -> SourceDefinition | None:
    """The SourceDefinition of a schema-valid document, or None when a check failed (see doc.problems)."""
    s: dict[str, Any] = doc.value["source"]
    kind = s["type"]
    mark = doc.mark("/source", key=True)
    broker = BROKER_TYPES[kind]
    missing = broker.missing()
    if missing:
        doc.fail(
            "/source/type",
            f"source type '{kind}' needs the Python package(s) {', '.join(m.split('.')[0] for m in missing)}, "
            "which the [queues] extra installs: pip install 'triggerd[queues]'",
        )
    url = s["url"]
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    # A URL with a variable `triggerd validate` could not substitute (CI without secrets) has
    # been reported as such; its scheme is unknown rather than wrong.
    unresolved = any(p.pointer == "/source/url" for p in doc.problems)
    if scheme not in SCHEMES[kind] and not unresolved:
        doc.fail(
            "/source/url",
            f"a {kind} source's url starts with {' or '.join(f'{x}://' for x in SCHEMES[kind])} "
            f"(got {scheme + '://' if scheme else 'no scheme'})",
        )
    options = {key: s.get(key, default) for key, default in OPTIONS[kind].items()}
    for key in DURATIONS:
        if key in options:
            options[key] = doc.duration(f"/source/{key}", options[key])
    event = s.get("event", {})
    source = SourceDefinition(
        id=source_id,
        type=kind,
        url=Secret(url),
        enabled=s.get("enabled", True),
        options=options,
        event=EventMapping(**{key: _field(doc, f"/source/event/{key}", value) for key, value in event.items()}),
        max_in_flight=s.get("max_in_flight", 16),
        dedupe_window=doc.duration("/source/dedupe_window", s.get("dedupe_window", "24h")),
        origin=Origin(doc.file, mark.line, mark.column),
        fingerprint=fingerprint(doc),
    )
    return None if doc.has_errors else source


def _field(doc: Document, pointer: str, value: Any) -> EventField:
    """A JSONPath when the value is a string starting with $, else the literal."""
    if isinstance(value, str) and value.lstrip().startswith("$"):
        return EventField(path=doc.jsonpath(pointer, value))
    return EventField(literal=value)
