"""Substituted secrets are never written out (SPEC 2.3): one registry of every value that
`${...}` substitution inserted, and the masking that every sink applies to what it writes.

Loading fills the registry (the documents reader registers each value it inserts from the
environment or a file); the log formatters, problem printers, HTTP answers, recorded run
outcomes and the daemon's own events pass what they write through `mask`, `mask_value` or
`dumps`. A default written in the file (`${NAME:-default}`) is not registered: whoever reads
the file sees it; nor is the path of a `${file:...}`, only its content.
Values are kept for the life of the process, so a secret rotated away by a reload stays masked
in the runs and logs that still hold it. Values shorter than MIN_LENGTH are not masked: masking
`true` or `8080` everywhere would garble every answer and protect nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

import orjson

MASK = "***"
MIN_LENGTH = 8


class SecretRegistry:
    """A set of secret values and one compiled alternation matching any of them, longest first.

    `add` runs in the loader's thread during a reload while the event loop masks, so both take
    a lock to change the set or the patterns. The patterns are compiled again only when a
    masking call finds the set changed: a load that registers a thousand values compiles once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._stale = False
        # The values as they are, and as they look inside a JSON string; swapped together.
        self._patterns: tuple[re.Pattern[str], re.Pattern[str]] | None = None

    def add(self, value: str) -> None:
        """Register a value to mask from now on (ignored below MIN_LENGTH characters)."""
        if len(value) < MIN_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._stale = True

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def _current(self) -> tuple[re.Pattern[str], re.Pattern[str]] | None:
        if self._stale:
            with self._lock:
                if self._stale:
                    self._patterns = (_alternation(self._values), _alternation(_in_json(v) for v in self._values))
                    self._stale = False
        return self._patterns

    def mask(self, text: str) -> str:
        """text with every registered value replaced by MASK."""
        patterns = self._current()
        return text if patterns is None else patterns[0].sub(MASK, text)

    def mask_value(self, value: Any) -> Any:
        """A JSON-like value with every string in it (keys too) masked; other values unchanged."""
        patterns = self._current()
        return value if patterns is None else _masked(value, patterns[0])

    def dumps(self, value: Any, indent: int | None = None) -> str:
        """value as JSON text (anything else as its str()) with every registered value masked.

        Serialising first and searching the text once is the cheap common case; only a text
        that holds a secret is built again from the masked value.
        """
        text = _compact(value) if indent is None else json.dumps(value, default=str, ensure_ascii=False, indent=indent)
        patterns = self._current()
        if patterns is None or patterns[1].search(text) is None:
            return text
        masked = _masked(value, patterns[0])
        compact = (",", ":") if indent is None else None
        return json.dumps(
            masked, default=lambda v: self.mask(str(v)), ensure_ascii=False, indent=indent, separators=compact
        )


# Dataclasses and datetimes to `default` (their str()), as json.dumps did, not to orjson's own forms.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _compact(value: Any) -> str:
    """JSON without spaces, by orjson (a tenth of json.dumps's time, for a log line and an answer
    per firing), anything but JSON's types as its str() as before; json.dumps for what orjson
    refuses (integers past 64 bits). orjson writes NaN and infinities as null, valid JSON."""
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _in_json(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _alternation(values: Iterable[str]) -> re.Pattern[str]:
    # Longest first, so that a secret containing another is masked whole.
    return re.compile("|".join(re.escape(v) for v in sorted(set(values), key=lambda v: (-len(v), v))))


def _masked(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if isinstance(value, dict):
        return {_masked(k, pattern): _masked(v, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item, pattern) for item in value]
    return value


SECRETS = SecretRegistry()
"""The process-wide registry: what this process loaded is what it masks."""


def register(value: str) -> None:
    SECRETS.add(value)


def mask(text: str) -> str:
    """text with every substituted secret replaced by `***` (SPEC 2.3)."""
    return SECRETS.mask(text)


def mask_value(value: Any) -> Any:
    """A JSON-like value with every substituted secret in its strings replaced by `***`."""
    return SECRETS.mask_value(value)


def dumps(value: Any, indent: int | None = None) -> str:
    """value as JSON text (non-JSON objects as their str()) with every substituted secret masked."""
    return SECRETS.dumps(value, indent)
