"""The event bus: events in, runs out (SPEC 3.4, 5.3).

An event reaches the triggers the index says its type could match, then their source
globs, then their condition (evaluated on the event alone). A trigger without
count_threshold fires at once; one with it adds the event to its counting window
(per group_by value) and fires when the window holds count_threshold events received
within `window`, then counts afresh. Windows live in the store, saved with the trigger's
fingerprint: they survive a restart, a changed definition starts from zero, and every
count is one store write under the window row's lock (Store.count_event), so daemons
sharing a database count together and fire once per threshold (SPEC 10). A crossing is
committed with its count as pending (the store's outbox); its run carries an idempotency key
named after the crossing, and the crossing is cleared after. Pending crossings a crash left
are fired on start and on each reload, by any daemon sharing the store: the key makes their
runs once (SPEC 9). `publish` returns only after every run it caused and every count it
made are committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from triggerd.clock import Clock, isoformat
from triggerd.conditions import Scope, evaluate
from triggerd.config.models import Configuration, Trigger
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.errors import MissingInput, PathTooBroad, StoreError, Unavailable
from triggerd.mapping import build_input
from triggerd.masking import mask_value
from triggerd.metrics import METRICS
from triggerd.runs import Firing, RunOutcome, RunStatus, Source
from triggerd.sources.events import Event, EventIndex, new_event_id, source_matches
from triggerd.store.abc import Store
from triggerd.store.rows import crossing_key

log = logging.getLogger("triggerd.events")
MAX_COUNTED_IN_INPUT = 100
# A crossing's run key is remembered at least this long (or the trigger's window if longer), so
# that a pending crossing fired again after a restart within it finds its run.
CROSSING_DEDUPE_SECONDS = 86400.0


@dataclass
class Published:
    event_ids: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"event_ids": self.event_ids, "matched": self.matched, "run_ids": self.run_ids}


def event_context(trigger: Trigger, event: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "event": event,
        "events": events[-MAX_COUNTED_IN_INPUT:],
        "count": len(events),
        "trigger": {"id": trigger.id, "name": trigger.name},
    }


def group_key(trigger: Trigger, context: dict[str, Any]) -> str:
    assert trigger.event is not None
    if trigger.event.group_by is None:
        return ""
    found = trigger.event.group_by.find(context)
    return json.dumps(found[0] if len(found) == 1 else found or None, sort_keys=True)


# An event's match: the event, the trigger, its context of the event alone, and its count in the
# store if the trigger counts (the counted entries on a crossing, else None).
_Plan = tuple[Event, Trigger, dict[str, Any], "asyncio.Future[list[dict[str, Any]] | None] | None"]


class EventBus:
    def __init__(self, dispatcher: Dispatcher, store: Store, clock: Clock, max_chain_depth: int) -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.clock = clock
        self.max_chain_depth = max_chain_depth
        self.index = EventIndex.build(dispatcher.configuration.triggers.values())
        self._lock = asyncio.Lock()
        self._internal: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Fire the pending crossings a previous life left, then drop the saved counting windows
        of triggers changed or removed since they were saved."""
        await self._fire_pending(self.dispatcher.configuration)
        await self._drop_stale_windows(self.dispatcher.configuration)

    async def reconfigure(self, configuration: Configuration) -> None:
        """A new index; pending crossings are fired, and the windows of changed or removed
        triggers are dropped from the store."""
        self.index = EventIndex.build(configuration.triggers.values())
        async with self._lock:
            await self._fire_pending(configuration)
            await self._drop_stale_windows(configuration)

    async def _fire_pending(self, configuration: Configuration) -> None:
        # A crossing is an accepted firing (SPEC 9): it fires under the trigger's current
        # definition even if that changed; a removed trigger's crossing has nothing to fire.
        for trigger_id, group, counted in await self.store.pending_crossings():
            trigger = configuration.triggers.get(trigger_id)
            if trigger is None or trigger.event is None:
                log.warning("crossing of removed trigger %s dropped", trigger_id, extra={"trigger_id": trigger_id})
                await self.store.clear_crossing(trigger_id, group, crossing_key(counted))
                continue
            try:
                await self._fire_crossing(trigger, group, counted, Published())
            except (StoreError, Unavailable) as exc:
                # It stays pending: the next start or reload (here or on another daemon) fires it.
                log.warning("pending crossing of %s not fired: %s", trigger_id, exc, extra={"trigger_id": trigger_id})

    async def _drop_stale_windows(self, configuration: Configuration) -> None:
        # count_event would start such a window afresh anyway (its fingerprint differs); dropping
        # it now keeps a removed trigger's windows from lingering in the store.
        stale: list[tuple[str, str, str, Any]] = []
        for trigger_id, group, fingerprint, _ in await self.store.load_windows():
            trigger = configuration.triggers.get(trigger_id)
            if trigger is None or trigger.fingerprint != fingerprint:
                stale.append((trigger_id, group, fingerprint, []))
        if stale:
            await self.store.save_windows(stale)
            log.info("dropped %d counting windows of changed or removed triggers", len(stale))

    async def stop(self) -> None:
        if self._internal:
            await asyncio.wait(set(self._internal), timeout=5)

    async def publish(self, events: list[Event], origin: str = "api") -> Published:
        """Match, count and fire; returns once every run and window change is committed."""
        METRICS.events.labels(origin).inc(len(events))
        result = Published()
        plans: list[_Plan] = []
        async with self._lock:  # not during a delivery's or a reload's turn (they hold it across their writes)
            for event in events:
                result.event_ids.append(event.id)
                self._plan(event, result, plans)
        # Its counts are under way, in order (tasks start in the order they were made, and a later
        # request's after them): the next request may plan while they commit, not after.
        await self._carry_out(plans, result)
        return result

    async def publish_batch(self, events: list[Event], origin: str) -> list[Published | None]:
        """Publish a delivery of events from a broker source (SPEC 5.4), in order; for each, its
        Published, or None when the store saw its id from its source within the dedupe window
        (or an earlier event of the same delivery had it): then nothing fires.

        One read finds the ids already seen; every count of the delivery is queued to the store
        at once, in delivery order (Store.count_event, under the window row's lock); the runs of
        all its events are submitted together (the store commits concurrent runs in one
        transaction); then every id is recorded in one commit. Returns once all of that is
        committed. Runs carry an idempotency key made of source and id (see Event.dedupe_seconds)
        and a window does not count an event it holds already: a crash or a store failure before
        the ids' commit leaves them unrecorded, and the redelivery (or the retry) finds the runs
        already there and counts nothing twice: an event that completed a window is held by the
        window's pending crossing until its run is made (only a crash between that crossing's
        clear and the recording of the id leaves a redelivery that counts into the next window).
        On a failure the whole delivery fails.
        """
        now = self.clock.now()
        stamp = isoformat(now)
        async with self._lock:
            seen: set[tuple[str, str]] = set()
            by_source: dict[str, list[str]] = {}
            for event in events:
                by_source.setdefault(event.source, []).append(event.id)
            for source, ids in by_source.items():
                seen.update((source, i) for i in await self.store.events_seen(source, ids, stamp))
            results: list[Published | None] = []
            planned: list[tuple[list[_Plan], Published]] = []
            recorded: list[tuple[str, str, str]] = []
            for event in events:
                if (event.source, event.id) in seen:
                    results.append(None)
                    continue
                seen.add((event.source, event.id))
                result = Published(event_ids=[event.id])
                plans: list[_Plan] = []
                self._plan(event, result, plans)
                planned.append((plans, result))
                results.append(result)
                recorded.append((event.source, event.id, isoformat(now + timedelta(seconds=event.dedupe_seconds))))
            # Every submit ends before this goes on, also when one fails: nothing of the delivery
            # is still being written when the caller retries it.
            outcomes = await asyncio.gather(
                *(self._carry_out(plans, result) for plans, result in planned), return_exceptions=True
            )
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failure is not None:
                raise failure
            if recorded:
                await self.store.commit_events(recorded)
        METRICS.events.labels(origin).inc(len(recorded))
        return results

    def _plan(self, event: Event, result: Published, plans: list[_Plan]) -> None:
        """Match the event and start its counts: every count of a request is queued to the store
        at once, in order, so that they share commits instead of taking one each."""
        body = event.to_json()
        now = self.clock.now()
        for trigger in self.index.candidates(event.type):
            assert trigger.event is not None
            if not source_matches(trigger, event.source) or trigger.id in self.dispatcher.flow.paused:
                continue  # (a paused trigger matches nothing, SPEC 12)
            alone = event_context(trigger, body, [body])
            try:
                if trigger.event.condition is not None and not evaluate(trigger.event.condition, alone, Scope.EVENT):
                    continue
                group = group_key(trigger, alone)
            except PathTooBroad as exc:  # the event is too large for this trigger's JSONPath (SPEC 4)
                log.error("event did not fire: %s", exc, extra={"trigger_id": trigger.id, "event_id": event.id})
                continue
            if trigger.id not in result.matched:
                result.matched.append(trigger.id)
            count = None
            if trigger.event.count_threshold is not None:
                count = asyncio.ensure_future(
                    self.store.count_event(
                        trigger.id,
                        group,
                        trigger.fingerprint,
                        {"received_at": isoformat(now), "event": body, "chain_depth": event.chain_depth},
                        isoformat(now - timedelta(seconds=trigger.event.window or 0)),
                        trigger.event.count_threshold,
                    )
                )
            plans.append((event, trigger, alone, count))

    async def _carry_out(self, plans: list[_Plan], result: Published) -> None:
        """Fire the plans in order: a trigger without a threshold at once, a count on its crossing."""
        try:
            for event, trigger, alone, count in plans:
                if count is None:
                    await self._fire(trigger, event, alone, result)
                    continue
                counted = await count
                if counted is not None:
                    await self._fire_crossing(trigger, group_key(trigger, alone), counted, result)
        except BaseException:
            # The counts already queued are committed or failed on their own; wait for them, so
            # that none outlives the request (and no failure of theirs goes unretrieved).
            await asyncio.gather(*(c for *_, c in plans if c is not None), return_exceptions=True)
            raise

    async def _fire(self, trigger: Trigger, event: Event, context: dict[str, Any], result: Published) -> None:
        key = f"event:{event.source}:{event.id}" if event.dedupe_seconds > 0 else None
        await self._submit(trigger, event.id, context, key, event.dedupe_seconds, event.chain_depth + 1, result)

    async def _fire_crossing(
        self, trigger: Trigger, group: str, counted: list[dict[str, Any]], result: Published
    ) -> None:
        """Make a crossing's run, keyed by the crossing so that it is made once by whichever daemon
        gets there (now, or after a crash from the pending crossing), then clear the crossing.
        A clear lost to a crash is harmless: the next firing of it finds the run by its key."""
        assert trigger.event is not None
        last = counted[-1]
        key = crossing_key(counted)
        context = event_context(trigger, last["event"], [w["event"] for w in counted])
        await self._submit(
            trigger,
            str(last["event"].get("id")),
            context,
            f"count:{trigger.id}:{group}:{key}",
            max(trigger.event.window or 0.0, CROSSING_DEDUPE_SECONDS),
            int(last.get("chain_depth", 0)) + 1,
            result,
        )
        await self.store.clear_crossing(trigger.id, group, key)

    async def _submit(
        self,
        trigger: Trigger,
        event_id: str,
        context: dict[str, Any],
        key: str | None,
        dedupe_seconds: float,
        chain_depth: int,
        result: Published,
    ) -> None:
        try:
            run_input = build_input(trigger.agent.input, trigger.agent.input_mapping, context)
        except (MissingInput, PathTooBroad) as exc:
            log.error("event did not fire: %s", exc, extra={"trigger_id": trigger.id, "event_id": event_id})
            return
        firing = Firing(
            trigger.id,
            trigger.agent.id,
            run_input,
            Source.EVENT,
            idempotency_key=key,
            dedupe_seconds=dedupe_seconds,
            chain_depth=chain_depth,
            context=context,
        )
        submitted = await self.dispatcher.submit(firing)
        result.run_ids.append(submitted.run_id)

    # --- the daemon's own events (SPEC 5.3) ---------------------------------------

    def emit(self, event: Event) -> None:
        """Publish an event of the daemon's own in the background (it must not hold up its cause).

        Its data is masked (SPEC 2.3): an error or a problem it carries may quote a secret, and
        the event is stored, returned and passed to the runs it fires.
        """
        event = replace(event, data=mask_value(event.data))
        if event.chain_depth >= self.max_chain_depth:
            log.warning(
                "event %s dropped: chain depth %d reached limits.max_event_chain_depth",
                event.type,
                event.chain_depth,
                extra={"event_id": event.id, "chain_depth": event.chain_depth},
            )
            return
        task = asyncio.create_task(self._publish_internal(event))
        self._internal.add(task)
        task.add_done_callback(self._internal.discard)

    async def _publish_internal(self, event: Event) -> None:
        try:
            await self.publish([event], origin="triggerd")
        except (StoreError, Unavailable) as exc:
            log.warning("event %s not published: %s", event.type, exc, extra={"event_id": event.id})

    def run_finished(self, run: RunOutcome) -> None:
        """The dispatcher's hook: a run reached a final status (SPEC 5.3 events)."""
        if run.status is RunStatus.COMPLETED:
            kinds: list[tuple[str, str | None]] = [("agent.run.completed", None)]
        elif run.status is RunStatus.SKIPPED:  # only a budget's skip is told (SPEC 12)
            kinds = [("error.agent.budget_exceeded", "high")]
        else:
            timed_out = run.status is RunStatus.TIMED_OUT
            kinds = [("error.agent.run_timed_out" if timed_out else "error.agent.run_failed", "high")]
            if run.retries_exhausted:
                kinds.append(("error.agent.dead_letter", "critical"))
        heard = [(kind, severity) for kind, severity in kinds if self.index.candidates(kind)]
        # An event no trigger listens to would fire nothing and be stored nowhere: it is only
        # counted, as publishing it would (this runs once per run: the event is not built).
        if len(heard) < len(kinds) and run.chain_depth < self.max_chain_depth:  # else emit drops it uncounted
            METRICS.events.labels("triggerd").inc(len(kinds) - len(heard))
        if not heard:
            return
        data: dict[str, Any] = {
            "run_id": run.run_id,
            "trigger_id": run.trigger_id,
            "agent_id": run.agent_id,
            "status": str(run.status),
            "attempts": run.attempts,
        }
        now = isoformat(self.clock.now())
        if run.status is RunStatus.COMPLETED:
            summary = run.output if isinstance(run.output, str) else json.dumps(run.output, default=str)
            data["output_summary"] = summary[:500] if summary is not None else None
        else:
            data["error"] = run.error
            if run.status is RunStatus.SKIPPED:
                data["budget"] = run.output
        for kind, severity in heard:
            self.emit(Event(new_event_id(), kind, "agents", now, data, severity, run.chain_depth))
