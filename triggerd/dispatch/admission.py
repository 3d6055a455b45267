"""Overlap admission (SPEC 3, 5.2, 10): is a firing stored `pending`, or `skipped`, and whom does it replace?

Counted over every daemon sharing the store (`Store.trigger_loads`), plus this daemon's
firings still being decided or stored (`reserved`). A read per firing would cost a store round
trip on the path of every webhook, so a load read recently is reused, with this daemon's
firings stored pending since the read began counted on top, as long as that total stays below
the limit it is checked against: within one daemon the total never undercounts (a run of the
trigger claimed or ended here is followed in the known load, anything else of it that the load
cannot follow forgets it; a run cancelled only lowers the truth), so reuse
never admits what a fresh read would skip, and every decision near the limit is made on a fresh read. Across
daemons, what others admitted within REUSE_SECONDS is not seen: `max_queued` and
`overlap: skip` may each be passed by that much (documented in docs/runs.md; `max_concurrent`
itself is enforced at claim time).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from triggerd.clock import Clock, isoformat
from triggerd.config.models import Overlap, Trigger
from triggerd.errors import StoreError
from triggerd.runs import RunStatus, SkipReason
from triggerd.store.abc import Store, TriggerLoad

REUSE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Decision:
    status: RunStatus
    reason: str | None = None
    victim: str | None = None  # overlap replace: the running run to cancel
    may_start: bool = True  # whether the trigger had room: if not, a claim now would find it full


@dataclass(frozen=True, slots=True)
class _Known:
    at: float  # monotonic time the read began
    load: TriggerLoad
    stored: int  # this daemon's firings of the trigger stored pending, when the read began
    ends: int  # runs of the trigger that had begun to record their end here, when the read began


class Admission:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.reserved: Counter[str] = Counter()  # firings being decided or stored, by trigger
        self.reserved_keys: Counter[tuple[str, str]] = Counter()  # the same, by (trigger, concurrency group)
        self._stored: Counter[str] = Counter()  # firings stored pending, by trigger, ever
        self._epoch: Counter[str] = Counter()  # runs claimed or ended here, by trigger, ever
        self._ends: Counter[str] = Counter()  # runs that began to record their end here, by trigger, ever
        self._known: dict[str, _Known] = {}
        self._reads: dict[str, asyncio.Future[TriggerLoad]] = {}  # by trigger, until its read answers
        self._wanted: dict[str, tuple[float, int, int, int]] = {}  # for the next read: when, stored, epoch, ends
        self._reader: asyncio.Task[None] | None = None

    async def decide(self, trigger: Trigger, key: str | None = None, debounce: str | None = None) -> Decision:
        """Call between reserve() and release() of the same firing; `key` is its concurrency group
        (SPEC 12), whose runs alone its overlap counts (read afresh: groups are many and small);
        `debounce` its debounce group, if the trigger has a debounce."""
        if trigger.debounce is not None:
            return await self._debounced(trigger, debounce or "")
        if key is not None:
            load = await self.store.key_load(trigger.id, key)
            return _judge(trigger, load, load.running + load.pending + self.reserved_keys[(trigger.id, key)] - 1)
        return self._known_decision(trigger) or self._decision(trigger, await self._read(trigger.id))

    async def decide_many(self, triggers: Sequence[Trigger]) -> list[Decision]:
        """decide() of many firings (each reserved, none with a concurrency key or a debounce): the
        loads none of them knows are read at once."""
        decided = [self._known_decision(trigger) for trigger in triggers]
        unknown = list(dict.fromkeys(t.id for t, d in zip(triggers, decided, strict=True) if d is None))
        loads = await self._read_now(unknown) if unknown else {}
        return [d or self._decision(t, loads[t.id]) for t, d in zip(triggers, decided, strict=True)]

    def _known_decision(self, trigger: Trigger) -> Decision | None:
        """The decision a recent read allows without another, if it does."""
        limit = trigger.max_concurrent + (trigger.max_queued if trigger.overlap is Overlap.QUEUE else 0)
        known = self._known.get(trigger.id)
        if (
            known is not None
            and trigger.overlap is not Overlap.REPLACE
            and self.clock.monotonic() - known.at < REUSE_SECONDS
            and self._estimate(trigger.id, known) < limit
        ):
            return Decision(RunStatus.PENDING, may_start=known.load.running < trigger.max_concurrent)
        return None

    def _decision(self, trigger: Trigger, load: TriggerLoad) -> Decision:
        return _judge(trigger, load, load.running + load.pending + self.reserved[trigger.id] - 1)

    async def _debounced(self, trigger: Trigger, group: str) -> Decision:
        """A debounced firing is not subject to overlap: its burst keeps one pending run per
        debounce group (Store.create_run). But groups are as many as a sender's key values, so
        `max_concurrent + max_queued` runs in flight still bound them: past it, a firing is
        admitted only into a group whose pending run it supersedes."""
        limit = trigger.max_concurrent + trigger.max_queued
        known = self._known.get(trigger.id)
        if (
            known is not None
            and self.clock.monotonic() - known.at < REUSE_SECONDS
            and self._estimate(trigger.id, known) < limit
        ):
            return Decision(RunStatus.PENDING, may_start=False)
        load = await self._read(trigger.id)
        if load.running + load.pending + self.reserved[trigger.id] - 1 < limit:
            return Decision(RunStatus.PENDING, may_start=False)
        state = await self.store.group_state(trigger.id, "debounce", group, isoformat(self.clock.now()))
        if state.pending:
            return Decision(RunStatus.PENDING, may_start=False)
        return Decision(RunStatus.SKIPPED, str(SkipReason.QUEUE_FULL))

    def _estimate(self, trigger_id: str, known: _Known) -> int:
        """Runs of the trigger in flight, never fewer than the truth within this daemon: stored
        pending since the read began may be counted twice (if the read saw them), never missed."""
        since = self._stored[trigger_id] - known.stored
        return known.load.running + known.load.pending + since + self.reserved[trigger_id] - 1

    def reserve(self, trigger_id: str, key: str | None = None) -> None:
        self.reserved[trigger_id] += 1
        if key is not None:
            self.reserved_keys[(trigger_id, key)] += 1

    def release(self, trigger_id: str, stored_pending: bool, key: str | None = None) -> None:
        """The firing is stored (or failed to be): it counts on top of the known load, if pending."""
        self.reserved[trigger_id] -= 1
        if key is not None:
            self.reserved_keys[(trigger_id, key)] -= 1
            if not self.reserved_keys[(trigger_id, key)]:
                del self.reserved_keys[(trigger_id, key)]  # groups are many: keep only those in flight
        if stored_pending:
            self._stored[trigger_id] += 1

    def forget(self, trigger_id: str) -> None:
        """Something of the trigger changed here that the known load cannot follow (a run sent back
        to pending for a retry, a lease lost): the next firing reads the store (and a read under
        way, which may predate it, is not kept)."""
        self._epoch[trigger_id] += 1
        self._known.pop(trigger_id, None)

    def started(self, trigger_id: str) -> None:
        """A run of the trigger was claimed here: the known load counts it running, one fewer pending
        (its total unchanged, as in the store), so that the next firing need not read it again. A
        read under way, which may or may not have seen the claim, is not kept."""
        self._follow(trigger_id, running=1, pending=-1)

    def ending(self, trigger_id: str) -> int:
        """A run of the trigger is about to record its end here; returns the number to give ended()."""
        self._ends[trigger_id] += 1
        return self._ends[trigger_id]

    def ended(self, trigger_id: str, number: int, final: bool) -> None:
        """After ending(): the run ended for good here (`final`), or it did not (sent back to pending
        for a retry, or not recorded: the load is read afresh). A known load read before the end
        began counts the run running: it takes it off. One read since may or may not have seen the
        end: it keeps it, counting one more than the truth rather than one fewer. (Before issue 17
        a run claimed or ended dropped the known load, and at a thousand runs a second nearly every
        firing read the store.)"""
        known = self._known.get(trigger_id)
        if not final:
            self.forget(trigger_id)
        elif known is not None and known.ends < number:
            self._follow(trigger_id, running=-1, pending=0)

    def _follow(self, trigger_id: str, running: int, pending: int) -> None:
        self._epoch[trigger_id] += 1
        known = self._known.get(trigger_id)
        if known is not None:  # never below zero: counting more than the truth only reads sooner
            load = replace(
                known.load, running=max(known.load.running + running, 0), pending=max(known.load.pending + pending, 0)
            )
            self._known[trigger_id] = replace(known, load=load)

    async def _read_now(self, trigger_ids: list[str]) -> dict[str, TriggerLoad]:
        """The loads of a batch's triggers in one read of its own (no future per trigger to share)."""
        asked = {t: self._asked(t) for t in trigger_ids}
        loads = await self.store.trigger_loads(trigger_ids)
        self._learn(asked, loads)
        return loads

    def _asked(self, trigger_id: str) -> tuple[float, int, int, int]:
        """What a read of the trigger's load begins with: when, stored, epoch, ends."""
        return self.clock.monotonic(), self._stored[trigger_id], self._epoch[trigger_id], self._ends[trigger_id]

    def _learn(self, asked: dict[str, tuple[float, int, int, int]], loads: dict[str, TriggerLoad]) -> None:
        """Keep loads read for reuse, unless a run of the trigger was claimed or ended meanwhile."""
        for trigger_id, (at, stored, epoch, ends) in asked.items():
            if epoch == self._epoch[trigger_id]:
                self._known[trigger_id] = _Known(at, loads[trigger_id], stored, ends)

    async def _read(self, trigger_id: str) -> TriggerLoad:
        """The store's load of the trigger. Firings that come while a read is under way wait for
        the next one, which reads every trigger they asked for at once (a burst of schedule
        slots of many triggers costs a few reads, not one each); firings of one trigger share
        its read (each counts the others through `reserved`, since none is stored before it)."""
        reading = self._reads.get(trigger_id)
        if reading is None:
            reading = asyncio.get_running_loop().create_future()
            self._reads[trigger_id] = reading
            self._wanted[trigger_id] = self._asked(trigger_id)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_batches(), name="admission-read")
        return await asyncio.shield(reading)

    async def _read_batches(self) -> None:
        while self._wanted:
            wanted, self._wanted = self._wanted, {}
            try:
                loads = await self.store.trigger_loads(list(wanted))
            except StoreError as exc:
                for trigger_id in wanted:
                    self._settle(trigger_id).set_exception(exc)  # each sharer reports it
                continue
            self._learn(wanted, loads)
            for trigger_id in wanted:
                self._settle(trigger_id).set_result(loads[trigger_id])

    def _settle(self, trigger_id: str) -> asyncio.Future[TriggerLoad]:
        return self._reads.pop(trigger_id)


def _judge(trigger: Trigger, load: TriggerLoad, in_flight: int) -> Decision:
    """The overlap decision for a firing, given the runs in flight beside it (less the firing itself)."""
    limit = trigger.max_concurrent + (trigger.max_queued if trigger.overlap is Overlap.QUEUE else 0)
    if trigger.overlap is Overlap.SKIP and in_flight >= limit:
        return Decision(RunStatus.SKIPPED, str(SkipReason.OVERLAP))
    if trigger.overlap is Overlap.QUEUE and in_flight >= limit:
        return Decision(RunStatus.SKIPPED, str(SkipReason.QUEUE_FULL))
    if trigger.overlap is Overlap.REPLACE and load.running >= trigger.max_concurrent:
        return Decision(RunStatus.PENDING, victim=load.oldest_running)
    return Decision(RunStatus.PENDING, may_start=load.running < trigger.max_concurrent)
