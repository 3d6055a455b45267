"""`triggerd test`'s flow-control part (SPEC 12): the groups a sample firing falls in, and — from a
running daemon's counts when one answers — whether it would be paused, over budget, debounced or
throttled now. The verdicts follow the daemon's own rules (dispatch/flow.py, store/flow.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from triggerd.clock import isoformat, parse_instant
from triggerd.config.models import Budget, Trigger
from triggerd.dispatch.flow import flow_keys
from triggerd.runs import FlowKeys


def has_flow_control(trigger: Trigger) -> bool:
    return any(c is not None for c in (trigger.concurrency_key, trigger.debounce, trigger.throttle, trigger.budget))


def group_lines(trigger: Trigger, context: Mapping[str, Any]) -> tuple[FlowKeys, list[tuple[str, str]]]:
    """The sample's groups, and the steps that show them (title, text)."""
    keys = flow_keys(trigger, context)
    steps = []
    if trigger.concurrency_key is not None:
        steps.append(
            (
                "concurrency key",
                f"{keys.concurrency}   ({trigger.concurrency_key.text}; "
                f"max_concurrent {trigger.max_concurrent}, overlap {trigger.overlap} per value)",
            )
        )
    if trigger.debounce is not None:
        path = trigger.debounce.key.text if trigger.debounce.key else "the whole trigger"
        steps.append(("debounce key", f"{keys.debounce or '(all)'}   ({path}; period {trigger.debounce.period:g}s)"))
    if trigger.throttle is not None:
        path = trigger.throttle.key.text if trigger.throttle.key else "the whole trigger"
        steps.append(
            (
                "throttle key",
                f"{keys.throttle or '(all)'}   ({path}; {trigger.throttle.limit} per {trigger.throttle.per:g}s)",
            )
        )
    if trigger.budget is not None:
        steps.append(("budget", _ceilings(trigger.budget.tokens_per_day, trigger.budget.runs_per_hour)))
    return keys, steps


def group_query(keys: FlowKeys) -> dict[str, str]:
    """The GET /v1/triggers/{id} query that asks the daemon for these groups."""
    wanted = {"concurrency": keys.concurrency, "throttle": keys.throttle, "debounce": keys.debounce}
    return {f"{kind}_key": key for kind, key in wanted.items() if key is not None}


def verdicts(
    trigger: Trigger, agent_budget: Budget | None, described: Mapping[str, Any], now: datetime
) -> list[tuple[str, str]]:
    """What the daemon would do with the sample now, from its GET /v1/triggers/{id} answer."""
    steps: list[tuple[str, str]] = []
    if described.get("paused"):
        steps.append(("paused", f"since {described['paused_at']}: the firing would not run (webhooks answer 503)"))
    spend = described.get("spend", {})
    for scope, budget in (("trigger", trigger.budget), ("agent", agent_budget)):
        spent = spend.get(scope)
        if spent is None or budget is None:
            continue
        text = f"{spent['tokens_per_day']} tokens in the last day, {spent['runs_per_hour']} runs in the last hour"
        if _over(spent, budget):
            text += ": over budget, the firing would be skipped (reason budget)"
        steps.append((f"{scope} spend", text))
    groups = described.get("groups", {})
    debounce, throttle, concurrency = groups.get("debounce"), groups.get("throttle"), groups.get("concurrency")
    if debounce is not None and trigger.debounce is not None:
        due = isoformat(now + timedelta(seconds=trigger.debounce.period))
        waiting = "supersedes the burst's pending run" if debounce["pending"] else "starts a burst"
        steps.append(("debounced", f"yes: {waiting}; it would wait until {due} (reason debounced)"))
    if throttle is not None and trigger.throttle is not None:
        started = list(throttle["started"])
        limit, per = trigger.throttle.limit, trigger.throttle.per
        if len(started) >= limit:
            frees = isoformat(parse_instant(started[len(started) - limit]) + timedelta(seconds=per))
            steps.append(("throttled", f"yes: {len(started)} of {limit} started in the window; waits until {frees}"))
        else:
            steps.append(("throttled", f"no: {len(started)} of {limit} started in the window"))
    if concurrency is not None:
        running, pending = concurrency["running"], concurrency["pending"]
        full = running >= trigger.max_concurrent
        steps.append(
            (
                "concurrency",
                f"{running} running, {pending} pending in its group: "
                + (f"it would wait (overlap {trigger.overlap})" if full else "it may start"),
            )
        )
    return steps


def _over(spent: Mapping[str, int], budget: Budget) -> bool:
    tokens, runs = budget.tokens_per_day, budget.runs_per_hour
    return (tokens is not None and spent["tokens_per_day"] >= tokens) or (
        runs is not None and spent["runs_per_hour"] >= runs
    )


def _ceilings(tokens: int | None, runs: int | None) -> str:
    parts = [f"{tokens} tokens a day" if tokens is not None else "", f"{runs} runs an hour" if runs is not None else ""]
    return ", ".join(p for p in parts if p)
