"""Flow control at firing time (SPEC 12): a firing's keys, pauses, and budgets.

What must hold across daemons when a run *starts* (concurrency per key, throttle windows) is
decided in the store's claim (store/flow.py); what is decided when a firing *arrives* is here:
which groups its context puts it in, whether its trigger is paused, and whether its trigger or
agent is over budget. Pauses are stored (Store.pause_trigger) and read back into `paused`: at
start, whenever the store notifies "paused" (PostgreSQL), and on every poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from triggerd.clock import Clock, isoformat
from triggerd.config.models import AnyAgent, Budget, Configuration, Trigger
from triggerd.errors import PathTooBroad, StoreError
from triggerd.mapping import JsonPath
from triggerd.metrics import METRICS
from triggerd.runs import AUTOMATIC, Firing, FlowKeys, Run, RunOutcome, RunStatus, SkipReason, WaitReason
from triggerd.store.abc import FlowLimits, Spend, Store

log = logging.getLogger("triggerd.dispatch")
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
# A key's group longer than this (as JSON) is stored as its digest: the value comes from a
# sender's body, and stored whole it would bloat each run row and index (PostgreSQL refuses an
# index row past ~2.7 kB) and `triggerd test`'s query. "sha256:..." is never valid JSON, so a
# digest cannot collide with a short group's name.
MAX_KEY_CHARS = 256


def key_value(path: JsonPath | None, context: Mapping[str, Any] | None) -> str | None:
    """A key's group: the first match as JSON ("null" when nothing matches), None without a key;
    past MAX_KEY_CHARS, "sha256:" and the JSON's digest (equal values still share a group)."""
    if path is None:
        return None
    try:
        found = path.find(context) if context is not None else []
    except PathTooBroad as exc:  # a context too large for the path (SPEC 4): grouped with the missing
        log.warning("flow-control key not evaluated: %s", exc)
        found = []
    try:
        group = json.dumps(found[0] if found else None, sort_keys=True, separators=(",", ":"))
    except RecursionError:  # a value the body parser could nest, deeper down the stack than here
        log.warning("flow-control key not evaluated: its value is nested too deep to encode")
        group = "null"
    if len(group) > MAX_KEY_CHARS:
        return "sha256:" + hashlib.sha256(group.encode()).hexdigest()
    return group


def flow_keys(trigger: Trigger, context: Mapping[str, Any] | None) -> FlowKeys:
    """The groups a firing with this trigger context falls in (SPEC 12). A debounce or throttle
    without a key groups the whole trigger (""); a concurrency key always names its group."""
    return FlowKeys(
        concurrency=key_value(trigger.concurrency_key, context),
        throttle=(key_value(trigger.throttle.key, context) or "") if trigger.throttle is not None else None,
        debounce=(key_value(trigger.debounce.key, context) or "") if trigger.debounce is not None else None,
    )


def claim_limits(configuration: Configuration) -> dict[str, FlowLimits]:
    """The triggers whose claims the store gates by flow control, for Loaded.flow."""
    return {
        t.id: FlowLimits(t.concurrency_key is not None, (t.throttle.limit, t.throttle.per) if t.throttle else None)
        for t in configuration.triggers.values()
        if t.concurrency_key is not None or t.throttle is not None
    }


def wait_for_debounce(trigger: Trigger, status: RunStatus, moment: datetime) -> tuple[str | None, str | None]:
    """A pending debounced run's reason and when it falls due (`period` from now); else (None, None)."""
    if status is not RunStatus.PENDING or trigger.debounce is None:
        return None, None
    return str(WaitReason.DEBOUNCED), isoformat(moment + timedelta(seconds=trigger.debounce.period))


@dataclass(frozen=True, slots=True)
class OverBudget:
    """A firing a budget refuses: which one, and what was spent."""

    scope: str  # "trigger" or "agent"
    owner: str  # its id
    limit: str  # "tokens_per_day" or "runs_per_hour"
    spent: int
    allowed: int

    @property
    def message(self) -> str:
        return f"{self.scope} '{self.owner}' is over its budget: {self.limit} {self.spent} of {self.allowed}"

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "id": self.owner,
            "limit": self.limit,
            "spent": self.spent,
            "allowed": self.allowed,
        }


@dataclass(frozen=True, slots=True)
class Screened:
    """What flow control made of a firing before overlap admission."""

    skip: str | None  # the reason it is recorded skipped (the caller's, paused, budget), None to go on
    keys: FlowKeys
    over: OverBudget | None = None


class FlowControl:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.paused: dict[str, str] = {}  # trigger id -> paused at, as last read from the store
        self._refresh: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the paused triggers from the store (another daemon may have paused one)."""
        self.paused = await self.store.paused_triggers()

    def refresh_soon(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._refresh_quietly(), name="flow-refresh")

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except StoreError as exc:
            log.warning("cannot read paused triggers: %s", exc)

    async def pause(self, trigger_id: str) -> str:
        """Pause a trigger (stored; every daemon learns it); returns when it was paused."""
        await self.store.pause_trigger(trigger_id, isoformat(self.clock.now()))
        await self.refresh()
        return self.paused.get(trigger_id, isoformat(self.clock.now()))

    async def resume(self, trigger_id: str) -> bool:
        resumed = await self.store.resume_trigger(trigger_id)
        await self.refresh()
        return resumed

    async def screen(self, trigger: Trigger, agent: AnyAgent, firing: Firing, skip: str | None) -> Screened:
        """A firing's groups, and whether a pause (not of a manual fire or replay) or a budget skips it."""
        keys = flow_keys(trigger, firing.context)
        if skip is None and firing.source in AUTOMATIC and trigger.id in self.paused:
            return Screened(str(SkipReason.PAUSED), keys)  # (webhooks answer 503 and events do not match first)
        if skip is None and (trigger.budget is not None or agent.budget is not None):
            over = await self.over_budget(trigger, agent)
            if over is not None:
                return Screened(str(SkipReason.BUDGET), keys, over)
        return Screened(skip, keys)

    def recorded(
        self, run: Run, superseded: int, over: OverBudget | None, listener: Callable[[RunOutcome], None] | None
    ) -> None:
        """Count a stored firing's skips (its own, and the burst's runs it superseded), and tell the
        listener (the event bus: error.agent.budget_exceeded) of a budget's."""
        if run.status is RunStatus.SKIPPED:
            METRICS.skips.labels(run.trigger_id, str(run.reason)).inc()
        if superseded:
            METRICS.skips.labels(run.trigger_id, str(SkipReason.DEBOUNCED)).inc(superseded)
            METRICS.runs.labels(run.trigger_id, str(RunStatus.SKIPPED)).inc(superseded)
        if over is not None:
            log.warning("firing skipped: %s", over.message, extra={"run_id": run.id, "trigger_id": run.trigger_id})
            if listener is not None:
                outcome = RunOutcome(
                    run.id, run.trigger_id, run.agent_id, run.status, 0, run.chain_depth, over.to_json(), over.message
                )
                listener(outcome)

    async def spend(self, trigger: Trigger, agent: AnyAgent | None) -> dict[str, Spend]:
        """The trigger's spend and, where the agent has a budget, the agent's (GET /v1/triggers/{id})."""
        now = self.clock.now()
        day, hour = isoformat(now - DAY), isoformat(now - HOUR)
        spent = {"trigger": await self.store.spend(trigger_id=trigger.id, day_since=day, hour_since=hour)}
        if agent is not None and agent.budget is not None:
            spent["agent"] = await self.store.spend(agent_id=agent.id, day_since=day, hour_since=hour)
        return spent

    async def groups(self, trigger: Trigger, keys: Mapping[str, str]) -> dict[str, Any]:
        """The state of the groups named by `keys` (kind -> key: "concurrency", "throttle", "debounce")
        for `triggerd test`; a throttle group's starts are those in its window now."""
        window = trigger.throttle.per if trigger.throttle is not None else 0.0
        since = isoformat(self.clock.now() - timedelta(seconds=window))
        return {
            kind: {"key": key, **(await self.store.group_state(trigger.id, kind, key, since)).to_json()}
            for kind, key in keys.items()
        }

    async def over_budget(self, trigger: Trigger, agent: AnyAgent) -> OverBudget | None:
        """The first budget of the trigger or its agent that a new run would exceed, None if none."""
        budgets: list[tuple[str, str, Budget | None]] = [
            ("trigger", trigger.id, trigger.budget),
            ("agent", agent.id, agent.budget),
        ]
        now = self.clock.now()
        for scope, owner, budget in budgets:
            if budget is None:
                continue
            ids = {"trigger_id": owner} if scope == "trigger" else {"agent_id": owner}
            spent = await self.store.spend(**ids, day_since=isoformat(now - DAY), hour_since=isoformat(now - HOUR))
            if budget.tokens_per_day is not None and spent.tokens >= budget.tokens_per_day:
                return OverBudget(scope, owner, "tokens_per_day", spent.tokens, budget.tokens_per_day)
            if budget.runs_per_hour is not None and spent.runs >= budget.runs_per_hour:
                return OverBudget(scope, owner, "runs_per_hour", spent.runs, budget.runs_per_hour)
        return None
