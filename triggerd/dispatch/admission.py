"""Overlap admission (SPEC 3, 5.2, 10): is a firing stored `pending`, or `skipped`, and whom does it replace?

Counted over every daemon sharing the store (`Store.trigger_load`), plus this daemon's
firings still being decided or stored (`reserved`). A read per firing would cost a store round
trip on the path of every webhook, so a load read recently is reused, with this daemon's
firings stored pending since the read began counted on top, as long as that total stays below
the limit it is checked against: within one daemon the total never undercounts (a run of the
trigger claimed or ended here forgets the load; a run cancelled only lowers the truth), so reuse
never admits what a fresh read would skip, and every decision near the limit is made on a fresh read. Across
daemons, what others admitted within REUSE_SECONDS is not seen: `max_queued` and
`overlap: skip` may each be passed by that much (documented in docs/runs.md; `max_concurrent`
itself is enforced at claim time).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from functools import partial

from triggerd.clock import Clock
from triggerd.config.models import Overlap, Trigger
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


class Admission:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.reserved: Counter[str] = Counter()  # firings being decided or stored, by trigger
        self._stored: Counter[str] = Counter()  # firings stored pending, by trigger, ever
        self._epoch: Counter[str] = Counter()  # runs claimed or ended here, by trigger, ever
        self._known: dict[str, _Known] = {}
        self._reads: dict[str, asyncio.Future[TriggerLoad]] = {}

    async def decide(self, trigger: Trigger) -> Decision:
        """Call between reserve() and release() of the same firing."""
        limit = trigger.max_concurrent + (trigger.max_queued if trigger.overlap is Overlap.QUEUE else 0)
        known = self._known.get(trigger.id)
        if (
            known is not None
            and trigger.overlap is not Overlap.REPLACE
            and self.clock.monotonic() - known.at < REUSE_SECONDS
            and self._estimate(trigger.id, known) < limit
        ):
            return Decision(RunStatus.PENDING, may_start=known.load.running < trigger.max_concurrent)
        load = await self._read(trigger.id)
        in_flight = load.running + load.pending + self.reserved[trigger.id] - 1  # less this firing itself
        if trigger.overlap is Overlap.SKIP and in_flight >= limit:
            return Decision(RunStatus.SKIPPED, str(SkipReason.OVERLAP))
        if trigger.overlap is Overlap.QUEUE and in_flight >= limit:
            return Decision(RunStatus.SKIPPED, str(SkipReason.QUEUE_FULL))
        if trigger.overlap is Overlap.REPLACE and load.running >= trigger.max_concurrent:
            return Decision(RunStatus.PENDING, victim=load.oldest_running)
        return Decision(RunStatus.PENDING, may_start=load.running < trigger.max_concurrent)

    def _estimate(self, trigger_id: str, known: _Known) -> int:
        """Runs of the trigger in flight, never fewer than the truth within this daemon: stored
        pending since the read began may be counted twice (if the read saw them), never missed."""
        since = self._stored[trigger_id] - known.stored
        return known.load.running + known.load.pending + since + self.reserved[trigger_id] - 1

    def reserve(self, trigger_id: str) -> None:
        self.reserved[trigger_id] += 1

    def release(self, trigger_id: str, stored_pending: bool) -> None:
        """The firing is stored (or failed to be): it counts on top of the known load, if pending."""
        self.reserved[trigger_id] -= 1
        if stored_pending:
            self._stored[trigger_id] += 1

    def forget(self, trigger_id: str) -> None:
        """A run of the trigger was claimed or ended here: the next firing reads the store (and a
        read under way, which may predate it, is not kept)."""
        self._epoch[trigger_id] += 1
        self._known.pop(trigger_id, None)

    async def _read(self, trigger_id: str) -> TriggerLoad:
        """The store's load; firings that come while a read is under way share it (each counts
        the others through `reserved`, since none of them is stored before it answers)."""
        reading = self._reads.get(trigger_id)
        if reading is None:
            reading = asyncio.ensure_future(self.store.trigger_load(trigger_id))
            self._reads[trigger_id] = reading
            began = (self.clock.monotonic(), self._stored[trigger_id], self._epoch[trigger_id])
            reading.add_done_callback(partial(self._read_done, trigger_id, began))
        return await asyncio.shield(reading)

    def _read_done(self, trigger_id: str, began: tuple[float, int, int], reading: asyncio.Future[TriggerLoad]) -> None:
        if self._reads.get(trigger_id) is reading:
            del self._reads[trigger_id]
        if reading.cancelled() or reading.exception() is not None:
            return  # each sharer reports a failed read itself
        at, stored, epoch = began
        if epoch == self._epoch[trigger_id]:
            self._known[trigger_id] = _Known(at, reading.result(), stored)
