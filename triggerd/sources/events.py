"""Events (SPEC 3.4, 5.3): what an event is, and which event triggers it concerns, found through an index."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from triggerd.clock import isoformat, parse_instant
from triggerd.conditions import SEVERITIES
from triggerd.config.models import Trigger, TriggerType
from triggerd.errors import TriggerdError
from triggerd.patterns import Glob, RegexSet, compile_glob, compile_regex

MAX_EVENTS_PER_REQUEST = 1000
MAX_NAME_LENGTH = 256  # SPEC 7.1: an event's type and source


class BadEvent(TriggerdError):
    """Raised by parse_events for an event that cannot be accepted; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    source: str
    time: str
    data: Any = None
    severity: str | None = None
    chain_depth: int = 0
    # > 0 for an event from a broker source (SPEC 5.4): the runs it causes carry an idempotency
    # key made of its source and id, remembered this long, so a redelivery fires nothing twice.
    dedupe_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "time": self.time,
            "data": self.data,
        }
        if self.severity is not None:
            body["severity"] = self.severity
        return body


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(10)


def parse_events(body: Any, now: datetime, default_source: str = "api") -> list[Event]:
    """One event or a list, each in triggerd's form or a structured CloudEvent (JSON with
    `specversion`); raises BadEvent."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise BadEvent("no events given")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise BadEvent(f"at most {MAX_EVENTS_PER_REQUEST} events per request, got {len(items)}")
    return [parse_event(item, f"event {i}", now, default_source) for i, item in enumerate(items)]


def parse_event(item: Any, where: str, now: datetime, default_source: str = "api") -> Event:
    """One event's attributes -> Event; raises BadEvent whose message starts with `where`.

    With `specversion` the item is a CloudEvent and needs its required attributes (id, source,
    type); triggerd's own form needs only `type`.
    """
    if not isinstance(item, dict):
        raise BadEvent(f"{where}: an event is a JSON object")
    if "specversion" in item:
        if item["specversion"] != "1.0":
            raise BadEvent(f"{where}: only CloudEvents specversion 1.0 is accepted")
        missing = [f"'{key}'" for key in ("id", "source", "type") if not _text(item.get(key))]
        if missing:
            raise BadEvent(f"{where}: a CloudEvent needs id, source and type; missing or empty: {', '.join(missing)}")
    kind = item.get("type")
    if not _text(kind):
        raise BadEvent(f"{where}: 'type' is required and must be a non-empty string")
    for key in ("id", "source", "time", "severity", "datacontenttype"):
        if key in item and item[key] is not None and not isinstance(item[key], str):
            raise BadEvent(f"{where}: '{key}' must be a string")
    for key in ("type", "source"):
        if len(item.get(key) or "") > MAX_NAME_LENGTH:
            raise BadEvent(f"{where}: '{key}' is longer than {MAX_NAME_LENGTH} characters")
    moment = item.get("time")
    if moment is not None:
        try:
            moment = isoformat(parse_instant(moment))
        except ValueError:
            raise BadEvent(f"{where}: 'time' must be an RFC 3339 instant with an offset") from None
    severity = item.get("severity")
    if severity is not None and severity.lower() not in SEVERITIES:
        raise BadEvent(f"{where}: unknown severity {severity!r} (one of: {', '.join(SEVERITIES)})")
    return Event(
        id=item.get("id") or new_event_id(),
        type=kind.strip(),
        source=item.get("source") or default_source,
        time=moment or isoformat(now),
        data=_data(item, where),
        severity=severity.lower() if severity else None,
    )


def _text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _data(item: dict[str, Any], where: str) -> Any:
    """`data`, or a CloudEvent's `data_base64` decoded as its `datacontenttype` says."""
    if "data_base64" not in item:
        return item.get("data", {})
    if "data" in item:
        raise BadEvent(f"{where}: give 'data' or 'data_base64', not both")
    try:
        raw = base64.b64decode(item["data_base64"], validate=True)
    except (TypeError, ValueError):
        raise BadEvent(f"{where}: 'data_base64' is not base64") from None
    return decode_data(raw, item.get("datacontenttype"), where)


def decode_data(raw: bytes, content_type: str | None, where: str) -> Any:
    """Event data from bytes and their media type (CloudEvents' datacontenttype, JSON when absent):
    JSON and any +json type decoded (empty is null), anything else UTF-8 text; raises BadEvent."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # nesting past the parser's depth is bad data too
            raise BadEvent(f"{where}: the data ({media}) is not valid JSON: {exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # a run's input is JSON: bytes that are not text have no faithful place in it
        raise BadEvent(f"{where}: the data ({media}) is neither JSON nor UTF-8 text") from None


def is_regex(pattern: str) -> bool:
    """Whether an event pattern is `/regex/` rather than a glob."""
    return len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/")


def type_matcher(pattern: str) -> Callable[[str], bool]:
    """How an event type is tested against a pattern: a glob matches whole, a /regex/ anywhere (RE2)."""
    if is_regex(pattern):
        return compile_regex(pattern[1:-1]).search
    return compile_glob(pattern).matches


def _literal_head(pattern: str) -> str | None:
    """The first dot-segment of a glob when it has no wildcard, else None."""
    head = pattern.split(".", 1)[0]
    return None if any(c in head for c in "*?") else head


def _literal_tail(pattern: str) -> str | None:
    """The last dot-segment of a glob when it has no wildcard and follows a dot, else None."""
    if "." not in pattern:
        return None
    tail = pattern.rsplit(".", 1)[1]
    return None if any(c in tail for c in "*?") else tail


@dataclass
class EventIndex:
    """Event triggers by pattern: exact types in a dict, globs by their first (else last) literal
    segment, and only globs literal at neither end, and regexes, tried for every event (the
    regexes all at once, as one RE2 set).

    An event consults only the triggers whose pattern could match it, not every trigger.
    """

    exact: dict[str, list[Trigger]] = field(default_factory=dict)
    by_head: dict[str, list[tuple[Glob, Trigger]]] = field(default_factory=dict)
    by_tail: dict[str, list[tuple[Glob, Trigger]]] = field(default_factory=dict)
    anywhere: list[tuple[Glob | int, Trigger]] = field(default_factory=list)  # int: a position in regexes
    regexes: RegexSet = field(default_factory=lambda: RegexSet(()))

    @classmethod
    def build(cls, triggers: Iterable[Trigger]) -> EventIndex:
        index = cls()
        expressions: list[str] = []
        for trigger in triggers:
            if trigger.type is not TriggerType.EVENT or trigger.event is None or not trigger.enabled:
                continue
            pattern = trigger.event.pattern
            if is_regex(pattern):
                index.anywhere.append((len(expressions), trigger))
                expressions.append(pattern[1:-1])
            elif not any(c in pattern for c in "*?"):
                index.exact.setdefault(pattern, []).append(trigger)
            else:
                head, tail = _literal_head(pattern), _literal_tail(pattern)
                if head is not None:
                    index.by_head.setdefault(head, []).append((compile_glob(pattern), trigger))
                elif tail is not None:
                    index.by_tail.setdefault(tail, []).append((compile_glob(pattern), trigger))
                else:
                    index.anywhere.append((compile_glob(pattern), trigger))
        index.regexes = RegexSet(expressions)
        return index

    def candidates(self, event_type: str) -> list[Trigger]:
        """Triggers whose type pattern matches, in a stable order."""
        found = list(self.exact.get(event_type, ()))
        head = event_type.split(".", 1)[0]
        found += [t for glob, t in self.by_head.get(head, ()) if glob.matches(event_type)]
        tail = event_type.rsplit(".", 1)[-1]
        found += [t for glob, t in self.by_tail.get(tail, ()) if glob.matches(event_type)]
        hits = self.regexes.matching(event_type)
        found += [t for m, t in self.anywhere if (m in hits if isinstance(m, int) else m.matches(event_type))]
        return found


def source_matches(trigger: Trigger, source: str) -> bool:
    assert trigger.event is not None
    return not trigger.event.sources or any(compile_glob(p).matches(source) for p in trigger.event.sources)
