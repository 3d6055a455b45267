"""The schedule loop: fires each schedule trigger's slots through the dispatcher (SPEC 3.1).

One heap of planned slots, ordered by when each is due (nominal time + jitter). The
loop sleeps until the earliest (at most a minute at a time, so that a step of the
wall clock is noticed) and never scans the schedules. Each slot is claimed in the
store under (trigger, nominal instant) in the same commit as its run, and the next
slot is always planned after the last claimed one, never after "now": a restart, a
reload or the clock going back cannot run a slot twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from triggerd.clock import Clock, isoformat, parse_instant
from triggerd.config.models import Trigger, TriggerType
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.errors import MissingInput, NotFound, StoreError, Unavailable
from triggerd.mapping import build_input
from triggerd.metrics import METRICS
from triggerd.runs import Firing, SkipReason, Source
from triggerd.sources.slots import Cron, jitter, next_slots, slots_between
from triggerd.store.abc import Store

log = logging.getLogger("triggerd.schedule")
MAX_SLEEP_SECONDS = 60.0
# A slot that fires within this of when it was due is on time; later than that (the
# daemon was down, stalled, or the clock jumped), the catch-up rule decides.
ON_TIME_SECONDS = 60.0
MAX_MISSED_RECORDED = 1000
BURST_CHUNK = 1000
RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class CatchUp:
    fire: datetime | None
    missed: list[datetime]


def catch_up(due: list[datetime], now: datetime, window_seconds: float) -> CatchUp:
    """Of overdue slots (ascending), the latest within the window fires once; the others are missed."""
    recent = [slot for slot in due if (now - slot).total_seconds() <= window_seconds] if window_seconds > 0 else []
    fire = recent[-1] if recent else None
    return CatchUp(fire, [slot for slot in due if slot != fire])


@dataclass(order=True)
class Planned:
    """A trigger's next slot: due at fire_at (the nominal instant plus its jitter)."""

    fire_at: datetime
    nominal: datetime = field(compare=False)
    trigger: Trigger = field(compare=False)
    cron: Cron = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


def cron_of(trigger: Trigger) -> Cron:
    schedule = trigger.schedule
    assert schedule is not None
    return Cron.parse(schedule.cron, schedule.timezone, schedule.start_date, schedule.end_date)


def fire_time(trigger: Trigger, cron: Cron, nominal: datetime) -> datetime:
    assert trigger.schedule is not None
    if trigger.schedule.jitter_seconds <= 0:
        return nominal
    following = next_slots(cron, nominal, 1)
    gap = (following[0] - nominal).total_seconds() if following else float(trigger.schedule.jitter_seconds)
    return nominal + timedelta(seconds=jitter(trigger.id, nominal, trigger.schedule.jitter_seconds, gap))


class Scheduler:
    def __init__(self, dispatcher: Dispatcher, store: Store, clock: Clock) -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.clock = clock
        self._heap: list[Planned] = []
        self._plans: dict[str, Planned] = {}
        self._last: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()  # slots handed to the store, not yet committed

    async def start(self) -> None:
        """Catch up on what was missed while stopped, plan every schedule, start the loop."""
        self._last = {t: parse_instant(n) for t, n in (await self.store.last_slots()).items()}
        now = self.clock.now()
        schedules = self._schedules()
        for i in range(0, len(schedules), BURST_CHUNK):
            await asyncio.gather(*(self._begin(trigger, now) for trigger in schedules[i : i + BURST_CHUNK]))
        self._task = asyncio.create_task(self._loop(), name="schedule-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # A slot whose commit is cut short here is either committed (the next start reads it from
        # the store's slots) or not (it is due again then): its claim makes it once either way.
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    def reconfigure(self) -> None:
        """Re-plan after the dispatcher took a new configuration: an unchanged schedule keeps its
        next slot; a changed one is planned afresh after its last claimed slot; a removed one stops."""
        current = {t.id: t for t in self._schedules()}
        for trigger_id, plan in list(self._plans.items()):
            trigger = current.get(trigger_id)
            if trigger is None or trigger.fingerprint != plan.trigger.fingerprint:
                plan.cancelled = True
                del self._plans[trigger_id]
        now = self.clock.now()
        for trigger in current.values():
            if trigger.id not in self._plans:
                # No catch-up on a reload: a new or changed schedule starts with its next slot.
                last = self._last.get(trigger.id)
                self._plan(trigger, cron_of(trigger), max(last, now) if last else now)
        self.wake()

    def wake(self) -> None:
        """Look at the heap again now (after a reload, or when a test moves its clock)."""
        self._wake.set()

    def state(self, trigger_id: str) -> dict[str, Any] | None:
        """For the admin API: the next slot (nominal and due) and the last slot claimed."""
        plan = self._plans.get(trigger_id)
        last = self._last.get(trigger_id)
        if plan is None and last is None:
            return None
        return {
            "next_nominal": isoformat(plan.nominal) if plan else None,
            "next_fire_at": isoformat(plan.fire_at) if plan else None,
            "last_slot": isoformat(last) if last else None,
        }

    def _schedules(self) -> list[Trigger]:
        triggers = self.dispatcher.configuration.triggers.values()
        return [t for t in triggers if t.type is TriggerType.SCHEDULE and t.enabled]

    async def _begin(self, trigger: Trigger, now: datetime) -> None:
        cron = cron_of(trigger)
        last = self._last.get(trigger.id)
        if last is not None:
            overdue = [s for s in slots_between(cron, last, now) if fire_time(trigger, cron, s) <= now]
            if overdue:
                await self._catch_up(trigger, overdue, now)
        self._plan(trigger, cron, self._last.get(trigger.id) or now)

    def _plan(self, trigger: Trigger, cron: Cron, after: datetime) -> None:
        upcoming = next_slots(cron, after, 1)
        if not upcoming:
            self._plans.pop(trigger.id, None)
            log.info("schedule has no more slots", extra={"trigger_id": trigger.id})
            return
        plan = Planned(fire_time(trigger, cron, upcoming[0]), upcoming[0], trigger, cron)
        self._plans[trigger.id] = plan
        heapq.heappush(self._heap, plan)
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            now = self.clock.now()
            due = []
            while self._heap and (self._heap[0].cancelled or self._heap[0].fire_at <= now):
                plan = heapq.heappop(self._heap)
                if not plan.cancelled:
                    due.append(plan)
            if due:
                # In the background: slots falling due while these commit are fired meanwhile,
                # not after (a commit can take a while on a busy disk).
                task = asyncio.create_task(self._fire_soon(due, now), name="schedule-fire")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            wait = MAX_SLEEP_SECONDS
            if self._heap:
                wait = min(wait, max((self._heap[0].fire_at - self.clock.now()).total_seconds(), 0.0))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001))

    async def _fire_soon(self, due: list[Planned], now: datetime) -> None:
        """Fire the due slots; those the store did not take go back to the heap a second later."""
        try:
            failed = await self._fire_due(due, now)
        except Exception:  # a bug must not stop every schedule: log it, and retry the slots
            log.exception("schedule slots not fired, retrying")
            failed = due
        if failed:
            await asyncio.sleep(RETRY_SECONDS)
            for plan in failed:
                heapq.heappush(self._heap, plan)
            self.wake()

    async def _fire_due(self, due: list[Planned], now: datetime) -> list[Planned]:
        """Fire the slots due together; returns the plans whose slot the store did not take (to retry).

        Slots on time go to the dispatcher in batches (their admissions share reads, their runs
        share the store's group commits), all batches at once, so that the store commits one while
        the next is built; a slot to catch up (late, or with later slots due too) goes alone.
        """
        on_time: list[Planned] = []
        late: list[Planned] = []
        for plan in due:
            later = slots_between(plan.cron, plan.nominal, now)
            late_by = (now - plan.fire_at).total_seconds()
            if late_by > ON_TIME_SECONDS or any(fire_time(plan.trigger, plan.cron, s) <= now for s in later):
                late.append(plan)
            else:
                on_time.append(plan)
        chunks = [on_time[i : i + BURST_CHUNK] for i in range(0, len(on_time), BURST_CHUNK)]
        outcomes = await asyncio.gather(
            *(self._fire_batch(chunk, now) for chunk in chunks),
            *(self._fire_late(plan, now) for plan in late),
            return_exceptions=True,
        )
        failed: list[Planned] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            failed += outcome
        return failed

    async def _fire_batch(self, plans: list[Planned], now: datetime) -> list[Planned]:
        firings = [self._firing(plan.trigger, plan.nominal, now, None) for plan in plans]
        try:
            outcomes = await self.dispatcher.submit_many(firings)
        except (StoreError, Unavailable) as exc:
            log.error("%d schedule slots not recorded, retrying: %s", len(plans), exc)
            return plans
        for plan, outcome in zip(plans, outcomes, strict=True):
            if isinstance(outcome, NotFound):  # removed by a reload the scheduler has yet to take
                log.warning("schedule slot not fired: %s", outcome, extra={"trigger_id": plan.trigger.id})
                continue
            METRICS.schedule_lag.observe(max((now - plan.fire_at).total_seconds(), 0.0))
            self._slot_taken(plan.trigger.id, plan.nominal)
            self._plan_next(plan)
        return []

    async def _fire_late(self, plan: Planned, now: datetime) -> list[Planned]:
        later = [s for s in slots_between(plan.cron, plan.nominal, now) if fire_time(plan.trigger, plan.cron, s) <= now]
        try:
            await self._catch_up(plan.trigger, [plan.nominal, *later], now)
        except (StoreError, Unavailable) as exc:
            log.error("schedule slot not recorded, retrying: %s", exc, extra={"trigger_id": plan.trigger.id})
            return [plan]
        self._plan_next(plan)
        return []

    def _plan_next(self, plan: Planned) -> None:
        """After a slot was taken: the trigger's next slot, unless a reload replaced or removed the
        trigger while the slot was committed (reconfigure planned it afresh, or not at all)."""
        if not plan.cancelled:
            self._plan(plan.trigger, plan.cron, self._last[plan.trigger.id])

    async def _catch_up(self, trigger: Trigger, overdue: list[datetime], now: datetime) -> None:
        assert trigger.schedule is not None
        decision = catch_up(overdue, now, trigger.schedule.catchup_window)
        missed = decision.missed[-MAX_MISSED_RECORDED:]
        if len(decision.missed) > len(missed):
            log.warning(
                "%d older missed slots not recorded one by one",
                len(decision.missed) - len(missed),
                extra={"trigger_id": trigger.id},
            )
        for slot in missed:
            await self._record(trigger, slot, now, skip=str(SkipReason.MISSED))
        if missed:
            log.warning("%d schedule slots missed", len(missed), extra={"trigger_id": trigger.id})
        if decision.fire is not None:
            await self._fire(trigger, decision.fire, now)
        self._last[trigger.id] = max(overdue)

    async def _fire(self, trigger: Trigger, nominal: datetime, now: datetime) -> None:
        await self._record(trigger, nominal, now, skip=None)

    async def _record(self, trigger: Trigger, nominal: datetime, now: datetime, skip: str | None) -> None:
        await self.dispatcher.submit(*self._firing(trigger, nominal, now, skip))
        self._slot_taken(trigger.id, nominal)

    def _firing(
        self, trigger: Trigger, nominal: datetime, now: datetime, skip: str | None
    ) -> tuple[Firing, str | None]:
        """A slot's firing, and why it is recorded skipped if it is."""
        context = {
            "scheduled_at": isoformat(nominal),
            "fired_at": isoformat(now),
            "trigger": {"id": trigger.id, "name": trigger.name},
        }
        try:
            run_input = build_input(trigger.agent.input, trigger.agent.input_mapping, context)
        except MissingInput as exc:
            log.error("schedule slot not fired: %s", exc, extra={"trigger_id": trigger.id})
            run_input, skip = dict(trigger.agent.input), skip or "missing_input"
        firing = Firing(
            trigger.id, trigger.agent.id, run_input, Source.SCHEDULE, nominal_time=isoformat(nominal), context=context
        )
        return firing, skip

    def _slot_taken(self, trigger_id: str, nominal: datetime) -> None:
        self._last[trigger_id] = max(nominal, self._last.get(trigger_id, nominal))
