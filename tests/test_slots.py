"""Slots of cron expressions in time zones (SPEC 3.1): the daylight-saving rule, ranges, jitter."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd.sources.cron import check_cron
from triggerd.sources.slots import Cron, jitter, next_slots, slots_between


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def day(expression: str, zone: str, date: str) -> list[str]:
    """Every slot whose local date is `date`, as UTC strings."""
    cron = Cron.parse(check_cron(expression), zone)
    start = datetime.fromisoformat(date).replace(tzinfo=cron.zone) - timedelta(days=1)
    found = slots_between(cron, start.astimezone(UTC), (start + timedelta(days=3)).astimezone(UTC))
    return [s.strftime("%H:%MZ") for s in found if s.astimezone(cron.zone).date().isoformat() == date]


@pytest.mark.parametrize(
    ("expression", "zone", "date", "expected"),
    [
        # SPEC 3.1 and issue 5, America/New_York 2026
        ("30 2 * * *", "America/New_York", "2026-03-08", ["07:00Z"]),  # 02:30 does not exist: the gap's end
        ("30 1 * * *", "America/New_York", "2026-11-01", ["05:30Z"]),  # 01:30 twice: the first only
        ("*/20 1 * * *", "America/New_York", "2026-11-01", ["05:00Z", "05:20Z", "05:40Z"]),
        ("30 2 * * *", "America/New_York", "2026-03-09", ["06:30Z"]),  # an ordinary day after
        # Europe/London 2026
        ("30 1 * * *", "Europe/London", "2026-03-29", ["01:00Z"]),
        ("30 1 * * *", "Europe/London", "2026-10-25", ["00:30Z"]),
        # a gap slot merges with a slot already at the gap's end
        ("0,30 2,3 * * *", "America/New_York", "2026-03-08", ["07:00Z", "07:30Z"]),
        # Australia/Lord_Howe moves by 30 minutes: 02:00 -> 02:30 on 10-04, 02:00 -> 01:30 on 04-05
        ("15 2 * * *", "Australia/Lord_Howe", "2026-10-04", ["15:30Z"]),
        ("45 1 * * *", "Australia/Lord_Howe", "2026-04-05", ["14:45Z"]),  # 01:45 at +11:00, not +10:30
    ],
)
def test_hour_anchored_daylight_saving(expression: str, zone: str, date: str, expected: list[str]) -> None:
    assert day(expression, zone, date) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "date", "count"),
    [
        ("0 * * * *", "America/New_York", "2026-03-08", 23),
        ("0 * * * *", "America/New_York", "2026-11-01", 25),
        ("@hourly", "Europe/London", "2026-10-25", 25),
        ("0 * * * *", "America/New_York", "2026-03-09", 24),
        ("*/30 * * * *", "Australia/Lord_Howe", "2026-10-04", 47),
        ("*/30 * * * *", "Australia/Lord_Howe", "2026-04-05", 49),
    ],
)
def test_hour_periodic_counts_real_instants(expression: str, zone: str, date: str, count: int) -> None:
    assert len(day(expression, zone, date)) == count


def test_hour_periodic_runs_the_repeated_hour_twice_in_order() -> None:
    slots = day("0 * * * *", "America/New_York", "2026-11-01")
    assert slots[:4] == ["04:00Z", "05:00Z", "06:00Z", "07:00Z"]  # 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST


def test_next_slots_and_macros() -> None:
    cron = Cron.parse(check_cron("@weekly"), "UTC")
    assert next_slots(cron, utc("2026-11-21T10:00:00Z"), 2) == [
        utc("2026-11-22T00:00:00Z"),
        utc("2026-11-29T00:00:00Z"),
    ]
    leap = Cron.parse(check_cron("0 0 29 2 *"), "UTC")
    assert next_slots(leap, utc("2026-11-21T00:00:00Z"), 1) == [utc("2028-02-29T00:00:00Z")]
    every = Cron.parse(check_cron("* * * * *"), "UTC")
    assert len(next_slots(every, utc("2026-11-21T10:00:30Z"), 500)) == 500


def test_start_and_end_dates_are_inclusive_on_nominal_times() -> None:
    cron = Cron.parse(
        check_cron("0 9 * * *"), "UTC", start=utc("2026-01-02T09:00:00Z"), end=utc("2026-01-04T09:00:00Z")
    )
    assert next_slots(cron, utc("2025-12-30T00:00:00Z"), 10) == [
        utc("2026-01-02T09:00:00Z"),
        utc("2026-01-03T09:00:00Z"),
        utc("2026-01-04T09:00:00Z"),
    ]


def test_jitter_is_bounded_by_the_jitter_and_the_gap_and_keeps_order() -> None:
    cron = Cron.parse(check_cron("*/5 * * * *"), "UTC")
    slots = next_slots(cron, utc("2026-11-21T00:00:00Z"), 200)
    fire = [s + timedelta(seconds=jitter("t", s, 3600, (n - s).total_seconds())) for s, n in itertools.pairwise(slots)]
    assert fire == sorted(fire)
    offsets = [(f - s).total_seconds() for f, s in zip(fire, slots, strict=False)]
    assert all(0 <= o < 300 for o in offsets)
    assert max(offsets) > 250  # spread over the whole gap, not bunched
    assert all(0 <= jitter("t", s, 10, 300) < 10 for s in slots)
    assert jitter("t", slots[0], 0, 300) == 0


def test_jitter_is_the_same_in_another_process() -> None:
    code = (
        "from datetime import datetime; from triggerd.sources.slots import jitter; "
        "print(repr(jitter('daily-report', datetime.fromisoformat('2026-11-21T09:00:00+00:00'), 600, 86400)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    here = jitter("daily-report", utc("2026-11-21T09:00:00Z"), 600, 86400)
    assert float(other) == here
    assert here != jitter("daily-reports", utc("2026-11-21T09:00:00Z"), 600, 86400)


ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kolkata"]
EXPRESSIONS = ["* * * * *", "*/20 1 * * *", "30 2 * * *", "0 * * * *", "15,45 1,2,3 * * *", "30 1 * * *"]


def brute_force(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    """The SPEC rule applied minute by minute over every wall time near `after`: slow, obviously right."""
    from croniter import croniter

    from triggerd.sources.slots import _instants

    cron = Cron.parse(expression, zone)
    fields = croniter.expand(expression)[0]
    assert fields[2:] == [["*"], ["*"], ["*"]]  # these expressions restrict only minutes and hours
    minutes = set(range(60)) if fields[0] == ["*"] else set(fields[0])
    hours = set(range(24)) if fields[1] == ["*"] else set(fields[1])
    wall = after.astimezone(cron.zone).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=4)
    found: set[datetime] = set()
    for minute in range(4 * 24 * 60):
        candidate = wall + timedelta(minutes=minute)
        if candidate.minute in minutes and candidate.hour in hours:
            found.update(i for i in _instants(candidate, cron.zone, cron.hour_anchored) if i > after)
    return sorted(found)[:count]


@settings(max_examples=150, deadline=None)
@given(
    expression=st.sampled_from(EXPRESSIONS),
    zone=st.sampled_from(ZONES),
    after=st.one_of(
        # near the 2026 transitions of these zones, where the rule matters, and anywhere in the year
        st.sampled_from(
            [
                utc(t)
                for t in (
                    "2026-03-08T06:10:00Z",
                    "2026-11-01T05:10:00Z",
                    "2026-03-29T00:40:00Z",
                    "2026-10-25T00:20:00Z",
                    "2026-10-03T15:05:00Z",
                    "2026-04-04T14:20:00Z",
                    "2026-04-04T13:30:00Z",
                    "2026-09-26T13:50:00Z",
                )
            ]
        ),
        st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 28), timezones=st.just(UTC)),
    ),
    offset_minutes=st.integers(min_value=-120, max_value=120),
)
def test_the_slot_search_agrees_with_a_minute_by_minute_reference(
    expression: str, zone: str, after: datetime, offset_minutes: int
) -> None:
    after = after + timedelta(minutes=offset_minutes)
    cron = Cron.parse(expression, zone)
    assert next_slots(cron, after, 3) == brute_force(expression, zone, after, 3)
