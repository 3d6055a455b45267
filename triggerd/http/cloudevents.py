"""POST /v1/events bodies (SPEC 5.3): the CloudEvents 1.0 HTTP binding's three modes, and triggerd's own form.

The mode is read from the request's framing, never guessed from the body:

- structured: Content-Type `application/cloudevents+json`, the body one CloudEvent;
- batch: Content-Type `application/cloudevents-batch+json`, the body a JSON array of CloudEvents;
- binary: any other Content-Type with `ce-*` headers. The headers are the attributes, the body
  is `data` and its Content-Type the `datacontenttype`; the body is never read as attributes,
  so a data field called `type` stays data;
- otherwise the body is JSON: one event or a list, each in triggerd's form or a structured
  CloudEvent (recognised by `specversion`).

A request that fits no mode raises BadEvent naming what is missing (the handler answers 400).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from triggerd.sources.events import BadEvent, Event, decode_data, parse_event, parse_events

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
# The binary-mode headers triggerd keeps; other ce-* headers (subject, dataschema, extensions)
# have no place in an event (SPEC 5.3) and are ignored, as the same attributes are in JSON.
_KEPT = ("specversion", "id", "source", "type", "time", "severity")
_REQUIRED = ("specversion", "type", "source", "id")
_BINARY = "binary-mode CloudEvent"


def events_from_http(
    content_type: str | None, headers: Iterable[tuple[str, str]], body: bytes, now: datetime
) -> list[Event]:
    """The events one POST /v1/events request carries; raises BadEvent."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == BATCH:
        items = _json(body, "the batch")
        if not isinstance(items, list):
            raise BadEvent(f"a batch ({BATCH}) is a JSON array of CloudEvents")
        for i, item in enumerate(items):
            if isinstance(item, dict) and "specversion" not in item:
                raise BadEvent(f"event {i}: a CloudEvent in a batch needs 'specversion'")
        return parse_events(items, now)
    if media.startswith("application/cloudevents"):
        if media != STRUCTURED:
            raise BadEvent(f"unsupported CloudEvents format {media}: send {STRUCTURED} or {BATCH}")
        item = _json(body, "the CloudEvent")
        if not isinstance(item, dict):
            raise BadEvent(f"a structured CloudEvent ({STRUCTURED}) is one JSON object; send a list as {BATCH}")
        if "specversion" not in item:
            raise BadEvent("event 0: a structured CloudEvent needs 'specversion'")
        return parse_events(item, now)
    attributes = _ce_headers(headers)
    if attributes:
        return [_binary(attributes, content_type, body, now)]
    return parse_events(_json(body, "the body"), now)


def _ce_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if not key.startswith("ce-"):
            continue
        if key[3:] in found:
            raise BadEvent(f"{_BINARY}: header {key} is repeated")
        try:
            found[key[3:]] = unquote(value, errors="strict")  # the binding percent-encodes non-ASCII values
        except UnicodeDecodeError:
            raise BadEvent(f"{_BINARY}: header {key} is not percent-encoded UTF-8") from None
    return found


def _binary(attributes: dict[str, str], content_type: str | None, body: bytes, now: datetime) -> Event:
    missing = [f"ce-{name}" for name in _REQUIRED if not attributes.get(name, "").strip()]
    if missing:
        raise BadEvent(
            f"{_BINARY}: missing header(s) {', '.join(missing)} (the body is the event's data, never its attributes)"
        )
    item: dict[str, Any] = {name: attributes[name] for name in _KEPT if name in attributes}
    item["data"] = decode_data(body, content_type, _BINARY)
    return parse_event(item, _BINARY, now)


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # nesting past the parser's depth is a bad body, not a 503
        raise BadEvent(f"{what} is not valid JSON") from None
