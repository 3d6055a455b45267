"""A message becomes an event (SPEC 5.4): the message context, and the source's `event:` mapping on it.

Shared by the daemon's runner and `triggerd test --message`, so that what a sample shows
offline is what the daemon does with the same message.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

from triggerd.clock import isoformat
from triggerd.config.models import EventField, SourceDefinition
from triggerd.errors import PathTooBroad, TriggerdError
from triggerd.sources.brokers.abc import Message
from triggerd.sources.events import BadEvent, Event, parse_event


class Poison(TriggerdError):
    """A message that can never become an event; its message is the dead letter's reason."""


_NOT_FOUND = object()


def decode_body(raw: bytes) -> Any:
    """The context's `body`: JSON decoded, else UTF-8 text, else null (bytes that are neither)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def message_context(message: Message, received_at: datetime) -> dict[str, Any]:
    """{"body", "headers", "id", the type's key (subject/stream/queue/list), "received_at"}."""
    return {
        **message.context,
        "body": decode_body(message.body),
        "headers": dict(message.headers),
        "id": message.broker_id,
        "received_at": _stamp(received_at),
    }


@functools.lru_cache(maxsize=1)
def _stamp(moment: datetime) -> str:
    # The messages of a delivery share their receipt time: it is written once, not once each.
    return isoformat(moment)


def to_event(source: SourceDefinition, message: Message, now: datetime, max_bytes: int | None = None) -> Event:
    """The event a message becomes; raises Poison saying which key of `event:` failed and why.

    A body larger than max_bytes (the daemon passes server.max_body_bytes, the bound of a
    webhook body) is poison before it is decoded, so a producer cannot make the loop parse
    megabytes of JSON.
    """
    if max_bytes is not None and len(message.body) > max_bytes:
        raise Poison(
            f"the message body is {len(message.body)} bytes, more than the {max_bytes} allowed (max_body_bytes)"
        )
    context = message_context(message, now)
    mapping = source.event
    kind = _value(mapping.type, context, "type", f"{source.id}.message")
    event_id = _value(mapping.id, context, "id", message.broker_id)
    if isinstance(event_id, int | float) and not isinstance(event_id, bool):
        event_id = str(event_id)  # a numeric id in a JSON body is still the same id
    item: dict[str, Any] = {
        "type": kind,
        "id": event_id,
        "source": source.id,
        "time": _value(mapping.time, context, "time", message.timestamp, optional=True),
        "severity": _value(mapping.severity, context, "severity", None, optional=True),
        "data": _value(mapping.data, context, "data", context["body"]),
    }
    if not isinstance(item["id"], str) or not item["id"]:
        raise Poison(f"event.id must give a non-empty string, got {json.dumps(item['id'], default=str)[:100]}")
    try:
        event = parse_event(item, "the mapped event", now, default_source=source.id)
    except BadEvent as exc:
        raise Poison(str(exc)) from None
    return Event(
        event.id, event.type, source.id, event.time, event.data, event.severity, dedupe_seconds=source.dedupe_window
    )


def _value(rule: EventField | None, context: dict[str, Any], key: str, default: Any, optional: bool = False) -> Any:
    if rule is None:
        return default
    if rule.path is None:
        return rule.literal
    try:
        found = rule.path.find(context)
    except PathTooBroad as exc:
        raise Poison(f"event.{key}: {exc}") from None
    if not found:
        if optional:
            return default
        hint = (
            " (the body is not JSON)"
            if rule.path.text.startswith("$.body.") and not isinstance(context["body"], dict | list)
            else ""
        )
        raise Poison(f"event.{key}: {rule.path.text} matched nothing in the message{hint}")
    return found[0] if len(found) == 1 else found
