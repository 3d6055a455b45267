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


@lru_cache(maxsize=1024)
def _spread(zone: ZoneInfo) -> timedelta:
    """How far apart the zone's UTC offsets ever are (0 for UTC, 1 h for New York), 1970-2100, daily samples."""
    offsets = set()
    moment = datetime(1970, 1, 1, tzinfo=UTC)
    while moment.year < 2100:
        offsets.add(moment.astimezone(zone).utcoffset())
        moment += timedelta(days=1)
    known = [o for o in offsets if o is not None]
    return max(known) - min(known)


@lru_cache(maxsize=16384)
def _iterator(expression: str) -> croniter:
    """One croniter per expression, reset before each walk: parsing the expression is croniter's main cost.
    Sharing is safe because a walk never yields control to the event loop."""
    return croniter(expression, datetime(2000, 1, 1))


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _margin(zone: ZoneInfo, instant: datetime) -> timedelta:
    """The zone's spread if an offset change lies within it of the instant, else nothing.

    Transitions are months apart, so equal offsets a spread before and after mean none is near.
    """
    spread = _spread(zone)
    if not spread:
        return spread
    offset = instant.utcoffset() if instant.tzinfo is zone else instant.astimezone(zone).utcoffset()
    near = ((instant - spread).astimezone(zone).utcoffset(), (instant + spread).astimezone(zone).utcoffset())
    return spread if any(o != offset for o in near) else timedelta(0)


def _walk(cron: Cron, after: datetime) -> Iterator[tuple[datetime, list[datetime]]]:
    """Matching wall times in order from where an instant after `after` can first come from, with their instants.

    A wall time w names an instant after `after` only if w > wall(after) - spread, where
    spread is how far the zone's offsets differ; away from any transition, it is 0.
    """
    start = (_wall(after, cron.zone) - _margin(cron.zone, after)).replace(second=0, microsecond=0)
    start -= timedelta(minutes=1)
    walls = _iterator(cron.expression)
    walls.set_current(start, force=True)
    while True:
        wall = walls.get_next(datetime)
        yield wall, _instants(wall, cron.zone, cron.hour_anchored)


@lru_cache(maxsize=4096)
def _collect(cron: Cron, after: datetime, until: datetime | None, count: int | None) -> tuple[datetime, ...]:
    """The slots in (after, limit], the first `count` of them if given.

    Cached: the answer depends on nothing else, and schedules sharing an expression (a burst
    of thousands of `* * * * *` triggers, or many hourly ones) ask the same question at the
    same instants, so one walk of croniter serves all of them.
    """
    limit = after + _LONGEST_SEARCH
    if cron.end is not None:
        limit = min(limit, cron.end)
    if until is not None:
        limit = min(limit, until)
    last_wall = _wall(limit, cron.zone) + _margin(cron.zone, limit)
    found: set[datetime] = set()
    for wall, instants in _walk(cron, after):
        if wall > last_wall:
            break
        found.update(i for i in instants if after < i <= limit and _in_range(cron, i))
        if count is not None and len(found) >= count:
            # A later wall time maps to an earlier instant only within the spread of the offsets.
            kth = sorted(found)[count - 1]
            if wall > _wall(kth, cron.zone) + _margin(cron.zone, kth):
                break
    ordered = sorted(found)
    return tuple(ordered[:count] if count is not None else ordered)


def _in_range(cron: Cron, instant: datetime) -> bool:
    return (cron.start is None or instant >= cron.start) and (cron.end is None or instant <= cron.end)


def next_slots(cron: Cron, after: datetime, count: int) -> list[datetime]:
    """The first `count` slot instants strictly after `after` (fewer if the schedule ends)."""
    return list(_collect(cron, after, None, count))


def slots_between(cron: Cron, after: datetime, until: datetime) -> list[datetime]:
    """Every slot instant in (after, until]."""
    return list(_collect(cron, after, until, None)) if until > after else []


def jitter(trigger_id: str, nominal: datetime, jitter_seconds: int, gap_seconds: float) -> float:
    """The delay of one slot: stable across processes, below both the jitter and the gap to the next slot."""
    bound = min(float(jitter_seconds), gap_seconds)
    if bound <= 0:
        return 0.0
    digest = hashlib.sha256(f"{trigger_id}|{nominal.astimezone(UTC).isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * bound
