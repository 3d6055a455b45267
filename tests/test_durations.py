from __future__ import annotations

import pytest

from triggerd.config.durations import format_duration, parse_duration
from triggerd.errors import DurationError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        (90, 90),
        ("90", 90),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        (" 1h 30m ", 5400),
        (1.5, 1.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "m5", "1.5h", "5 minutes", -1, True, None, "1h-30m", [5]])
def test_not_durations(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(5400, "1h30m"), (300, "5m"), (1.5, "1.5s"), (0, "0s"), (86461, "1d1m1s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
