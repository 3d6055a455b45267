"""Schedule slots: which instants a cron expression names in a time zone (SPEC 3.1). Pure: no I/O, no clock.

croniter only enumerates matching *wall* times (naive datetimes). Turning wall
times into instants is ours, because the SPEC's daylight-saving rule differs from
croniter's:

- hour-anchored expressions (the hour field does not cover all 24 hours): a wall
  time that occurs twice runs once, at its first occurrence; a wall time that does
  not exist runs once, at the first instant after the gap (merged with any slot
  already there);
- hour-periodic expressions (`*` in the hour, @hourly): every real instant that
  matches runs; a time in the gap does not exist; a time in the repeated hour runs
  twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

# No zone has ever moved its clocks by more than this at once; wall times this far
# before a window's start are enough to find every instant inside it.
_MARGIN = timedelta(hours=3)
_FIRST_WINDOW = timedelta(hours=1)
_LONGEST_SEARCH = timedelta(days=366 * 30)


@dataclass(frozen=True, slots=True)
class Cron:
    """A checked five-field expression in a zone, ready to enumerate slots."""

    expression: str
    zone: ZoneInfo
    hour_anchored: bool
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(cls, five_fields: str, zone: str, start: datetime | None = None, end: datetime | None = None) -> Cron:
        hours = croniter.expand(five_fields)[0][1]
        anchored = hours != ["*"] and len(set(hours)) < 24
        return cls(five_fields, _zone(zone), anchored, start, end)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _instants(wall: datetime, zone: ZoneInfo, anchored: bool) -> list[datetime]:
    """The UTC instants a wall time names under the SPEC's rule."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    first_utc, second_utc = first.astimezone(UTC), second.astimezone(UTC)
    exists = first_utc.astimezone(zone).replace(tzinfo=None) == wall
    if not exists:
        if not anchored:
            return []
        # In the gap: fold=1 reads the wall time with the offset from before the
        # transition, which lands after the gap; the gap ends at the transition.
        return [_gap_end(min(first_utc, second_utc), max(first_utc, second_utc), zone)]
    if first_utc != second_utc and not anchored:
        return [first_utc, second_utc]  # the repeated hour: both occurrences
    return [min(first_utc, second_utc)]


def _gap_end(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after the gap: where the offset changes, between low and high."""
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def _window(cron: Cron, after: datetime, until: datetime) -> list[datetime]:
    """Every slot instant in (after, until], sorted, without repeats."""
    wall = (after.astimezone(cron.zone).replace(tzinfo=None) - _MARGIN).replace(second=0, microsecond=0)
    last = until.astimezone(cron.zone).replace(tzinfo=None) + _MARGIN
    found: set[datetime] = set()
    walls = croniter(cron.expression, wall - timedelta(minutes=1))
    while True:
        candidate = walls.get_next(datetime)
        if candidate > last:
            break
        for instant in _instants(candidate, cron.zone, cron.hour_anchored):
            if after < instant <= until and _in_range(cron, instant):
                found.add(instant)
    return sorted(found)


def _in_range(cron: Cron, instant: datetime) -> bool:
    return (cron.start is None or instant >= cron.start) and (cron.end is None or instant <= cron.end)


def next_slots(cron: Cron, after: datetime, count: int) -> list[datetime]:
    """The first `count` slot instants strictly after `after` (fewer if the schedule ends)."""
    span = _FIRST_WINDOW
    while True:
        found = _window(cron, after, after + span)
        if len(found) >= count or span > _LONGEST_SEARCH or (cron.end is not None and after + span >= cron.end):
            return found[:count]
        span *= 2


def slots_between(cron: Cron, after: datetime, until: datetime) -> list[datetime]:
    """Every slot instant in (after, until]."""
    return _window(cron, after, until) if until > after else []


def iter_slots(cron: Cron, after: datetime) -> Iterator[datetime]:
    """Slot instants after `after`, one by one, without end (until the schedule ends)."""
    while True:
        batch = next_slots(cron, after, 64)
        if not batch:
            return
        yield from batch
        after = batch[-1]


def jitter(trigger_id: str, nominal: datetime, jitter_seconds: int, gap_seconds: float) -> float:
    """The delay of one slot: stable across processes, below both the jitter and the gap to the next slot."""
    bound = min(float(jitter_seconds), gap_seconds)
    if bound <= 0:
        return 0.0
    digest = hashlib.sha256(f"{trigger_id}|{nominal.astimezone(UTC).isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * bound
