"""What a webhook request becomes (SPEC 3.2, 3.5): its context, parsed body, idempotency key and age.

Pure functions of the request's parts, shared by the HTTP handler and `triggerd test`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson

from triggerd.config.models import Trigger
from triggerd.errors import TriggerdError
from triggerd.http.auth import Verified

# orjson parses a JSON body in a third of json.loads's time, but reads an integer past 64 bits as a
# float: a body with 19 digits in a row (in a number or not) goes to json.loads, which keeps it exact.
# Found by turning every digit into "0" and looking for nineteen of them: a regular expression
# took longer than json.loads itself.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


class BadBody(TriggerdError):
    """Raised by parse_body for a JSON or form body that does not parse (the webhook answers 400)."""


def parse_body(content_type: str, body: bytes) -> Any:
    """JSON, a form as a mapping (repeated keys as lists), else text (None if not UTF-8).

    A JSON or form body that does not parse, for whatever reason, raises BadBody (a 400)."""
    if content_type == "application/json" or content_type.endswith("+json"):
        if not body.strip():
            return None
        if _LONG_NUMBER not in body.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                pass  # json.loads below: it accepts what orjson does not (NaN, lone surrogates, UTF-16) or says why not
        try:
            return json.loads(body)
        except RecursionError:
            # json's C parser counts nesting against the interpreter's recursion limit (~1000).
            raise BadBody("invalid JSON: nested deeper than the parser allows") from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise BadBody(f"invalid JSON: {exc}") from None
    if content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise BadBody("invalid form: not UTF-8, as such or %-encoded") from None
        return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _merged(pairs: Iterable[tuple[str, str]], *, lower: bool) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name, value in pairs:
        key = name.lower() if lower else name
        if key not in merged:
            merged[key] = value
        elif lower:  # repeated headers join as HTTP folds them
            merged[key] = f"{merged[key]}, {value}"
        else:  # repeated query keys become a list
            merged[key] = [*merged[key], value] if isinstance(merged[key], list) else [merged[key], value]
    return merged


def webhook_context(
    trigger: Trigger,
    *,
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
    body: Any,
    remote_addr: str | None,
    received_at: str,
) -> dict[str, Any]:
    """The trigger context of a webhook request; header names lower-cased."""
    return {
        "body": body,
        "headers": _merged(headers, lower=True),
        "query": _merged(query, lower=False),
        "method": method,
        "path": path,
        "remote_addr": remote_addr,
        "received_at": received_at,
        "trigger": {"id": trigger.id, "name": trigger.name},
    }


def idempotency_key(trigger: Trigger, context: dict[str, Any], verified: Verified) -> str | None:
    """The trigger's idempotency_key JSONPath, else the provider's delivery id (GitHub, Standard Webhooks...)."""
    if trigger.idempotency_key is None:
        return verified.delivery_id
    found = trigger.idempotency_key.find(context)
    if not found:
        return None
    value = found[0]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def too_old(trigger: Trigger, verified: Verified, now: datetime) -> bool:
    """max_event_age, judged by the provider's signed timestamp where there is one."""
    if trigger.max_event_age is None or verified.timestamp is None:
        return False
    return (now - verified.timestamp).total_seconds() > trigger.max_event_age
