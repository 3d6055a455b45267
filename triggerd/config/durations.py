"""Durations: integer seconds, or strings such as "90s", "5m", "1h30m", "2d" (SPEC 2.4)."""

from __future__ import annotations

import re

from triggerd.errors import DurationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"\s*(?:\d+\s*[smhdw]\s*)+")
_PART = re.compile(r"(\d+)\s*([smhdw])")


def parse_duration(value: object) -> float:
    """Seconds in a duration value; raises DurationError for anything else."""
    if isinstance(value, bool):
        raise DurationError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise DurationError(f"a duration cannot be negative: {value}")
        return float(value)
    if isinstance(value, str):
        if value.strip().isdigit():
            return float(value.strip())
        if _WHOLE.fullmatch(value):
            return float(sum(int(n) * _UNITS[u] for n, u in _PART.findall(value)))
    raise DurationError(f"{value!r} is not a duration (use seconds or e.g. '90s', '5m', '1h30m', '2d')")


def format_duration(seconds: float) -> str:
    """The shortest unit string for a duration, e.g. 5400 -> "1h30m"."""
    whole = int(seconds)
    if whole != seconds or whole == 0:
        return f"{seconds:g}s"
    parts = []
    for unit in "dhms":
        size = _UNITS[unit]
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)
