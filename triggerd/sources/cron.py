"""Cron expressions: the forms triggerd accepts (SPEC 3.1) and whether they can ever fire.

croniter computes which wall times match the fields; every question of time
zones and daylight saving is answered by our own code, not croniter's.
"""

from __future__ import annotations

from croniter import croniter
from croniter.croniter import CroniterError

from triggerd.errors import CronError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The longest each month can be; February counts its leap-year 29th.
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def check_cron(expression: str) -> str:
    """The five-field form of an accepted expression; raises CronError saying what is wrong."""
    text = expression.strip()
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        raise CronError("CRON_TZ= prefixes are not supported; set schedule.timezone instead")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown cron macro {text!r} (use one of: {', '.join(MACROS)})")
        return MACROS[text.lower()]
    fields = text.split()
    if len(fields) in (6, 7):
        raise CronError(
            f"cron expression has {len(fields)} fields; triggerd takes 5 "
            "(minute hour day-of-month month day-of-week), without seconds or years"
        )
    if len(fields) != 5:
        raise CronError(
            f"cron expression has {len(fields)} fields; expected 5 (minute hour day-of-month month day-of-week)"
        )
    try:
        expanded, _ = croniter.expand(text)
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise CronError(f"malformed cron expression {text!r}: {exc}") from None
    days, months, weekdays = expanded[2], expanded[3], expanded[4]
    if not _can_fire(days, months, weekdays):
        raise CronError(f"cron expression {text!r} can never fire (no such day in those months)")
    return " ".join(fields)


def _can_fire(days: list[object], months: list[object], weekdays: list[object]) -> bool:
    # With both day fields restricted cron fires when either matches; a weekday always exists.
    if days == ["*"] or weekdays != ["*"] or "l" in days:
        return True
    month_numbers = range(1, 13) if months == ["*"] else [m for m in months if isinstance(m, int)]
    first_day = min(d for d in days if isinstance(d, int))
    return any(first_day <= _MONTH_DAYS[m] for m in month_numbers)
