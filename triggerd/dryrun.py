"""`triggerd test`: a webhook trigger against a sample request, or an event trigger against a sample event,
offline (SPEC 6). Nothing is dispatched."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from multidict import CIMultiDict

from triggerd.clock import isoformat
from triggerd.conditions import Condition, Scope, explain
from triggerd.config.models import AnthropicAgent, AnyAgent, CommandAgent, Configuration, Trigger
from triggerd.errors import AuthFailure, MissingInput, PathTooBroad, TemplateError
from triggerd.http.auth import Verified, Verifier
from triggerd.mapping import build_input
from triggerd.sources.bus import event_context, group_key
from triggerd.sources.events import BadEvent, EventIndex, parse_events, source_matches
from triggerd.sources.webhook import BadBody, idempotency_key, parse_body, webhook_context


@dataclass
class Trial:
    """What the daemon would do with the sample, step by step; `accepted` is the verdict."""

    trigger: Trigger
    lines: list[str] = field(default_factory=list)
    accepted: bool = True

    def step(self, title: str, text: str = "") -> None:
        self.lines.append(f"{title:<16}{text}".rstrip())

    def detail(self, text: str) -> None:
        self.lines.extend(f"  {line}" for line in text.splitlines())

    def condition(self, title: str, condition: Condition, context: dict[str, Any], scope: Scope, refused: str) -> bool:
        """Show a condition's verdict and every clause; False (and not accepted) when it does not hold."""
        try:
            verdict, results = explain(condition, context, scope)
        except PathTooBroad as exc:
            self.reject(title, f"{exc} -> {'422' if scope is Scope.WEBHOOK else 'not fired'}")
            return False
        self.step(title, "true" if verdict else f"false -> {refused}")
        self.detail("\n".join(str(result) for result in results))
        self.accepted = self.accepted and verdict
        return verdict

    def reject(self, title: str, text: str) -> Trial:
        self.step(title, text)
        self.accepted = False
        return self


def try_webhook(
    configuration: Configuration,
    trigger: Trigger,
    *,
    body: bytes,
    content_type: str,
    headers: Sequence[tuple[str, str]],
    query: Sequence[tuple[str, str]],
    verify: bool,
    now: datetime,
) -> Trial:
    webhook = trigger.webhook
    assert webhook is not None
    trial = Trial(trigger)
    trial.step("trigger", f"{trigger.id}: {webhook.method} {webhook.endpoint} ({trigger.origin})")
    verified = Verified()
    if webhook.authentication is None:
        trial.step("authentication", "none")
    elif not verify:
        trial.step("authentication", f"{webhook.authentication.type}: skipped (use --verify)")
    else:
        try:
            verified = Verifier(webhook.authentication).verify(CIMultiDict(headers), body, now)
        except AuthFailure as exc:
            return trial.reject("authentication", f"{webhook.authentication.type}: FAILED: {exc} -> 401")
        trial.step("authentication", f"{webhook.authentication.type}: ok")
    try:
        parsed = parse_body(content_type, body)
    except BadBody as exc:
        return trial.reject("body", f"{exc} -> 400")
    context = webhook_context(
        trigger,
        method=webhook.method,
        path=webhook.endpoint,
        headers=[("content-type", content_type), *headers],
        query=query,
        body=parsed,
        remote_addr="127.0.0.1",
        received_at=isoformat(now),
    )
    if webhook.filter is None:
        trial.step("filter", "none")
    elif not trial.condition("filter", webhook.filter, context, Scope.WEBHOOK, "200 filtered"):
        return trial
    return _finish(trial, configuration.agents[trigger.agent.id], context, verified)


def try_event(configuration: Configuration, trigger: Trigger, body: Any, now: datetime) -> Trial:
    match = trigger.event
    assert match is not None
    trial = Trial(trigger)
    trial.step("trigger", f"{trigger.id}: events {match.pattern} ({trigger.origin})")
    try:
        event = parse_events(body, now, default_source="cli")[0]
    except BadEvent as exc:
        return trial.reject("event", f"{exc} -> 400")
    matches_type = any(t.id == trigger.id for t in EventIndex.build([trigger]).candidates(event.type))
    trial.step("type", f"{event.type} {'matches' if matches_type else 'does not match'} {match.pattern}")
    if not matches_type:
        return trial.reject("verdict", "not matched")
    sources = ", ".join(match.sources) or "any"
    if not source_matches(trigger, event.source):
        return trial.reject("source", f"{event.source} is not one of: {sources}")
    trial.step("source", f"{event.source} (allowed: {sources})")
    payload = event.to_json()
    context = event_context(trigger, payload, [payload])
    if match.condition is None:
        trial.step("condition", "none")
    elif not trial.condition("condition", match.condition, context, Scope.EVENT, "not matched"):
        return trial
    if match.count_threshold is not None:
        window = f"{match.window:g}s" if match.window is not None else "?"
        try:
            group = group_key(trigger, context)
        except PathTooBroad as exc:
            return trial.reject("counting", f"{exc} -> not fired")
        trial.step(
            "counting",
            f"this event counts 1 of {match.count_threshold} within {window}, group "
            f"{group or '(all)'}; the run below is what the "
            f"{match.count_threshold}th would start",
        )
    return _finish(
        trial,
        configuration.agents[trigger.agent.id],
        context,
        Verified(),
        idempotency=False,
        verdict="matched (nothing was dispatched)",
    )


def _finish(
    trial: Trial,
    agent: AnyAgent,
    context: dict[str, Any],
    verified: Verified,
    idempotency: bool = True,
    verdict: str = "accepted -> 202 (nothing was dispatched)",
) -> Trial:
    trigger = trial.trigger
    try:
        run_input = build_input(trigger.agent.input, trigger.agent.input_mapping, context)
        key = idempotency_key(trigger, context, verified) if idempotency else None
    except (MissingInput, PathTooBroad) as exc:
        return trial.reject("input mapping", f"{exc} -> 422")
    if trigger.agent.input_mapping:
        trial.step("input mapping")
        trial.detail(
            "\n".join(
                f"{rule.key} = {json.dumps(run_input.get(rule.key), ensure_ascii=False)}   ({rule.path})"
                for rule in trigger.agent.input_mapping
            )
        )
    if idempotency:
        trial.step("idempotency key", key if key is not None else "none")
    trial.step("run input")
    trial.detail(json.dumps(run_input, indent=2, ensure_ascii=False))
    try:
        if isinstance(agent, CommandAgent):
            trial.step("argv", json.dumps([t.render(run_input) for t in agent.command], ensure_ascii=False))
        elif isinstance(agent, AnthropicAgent):
            prompt = agent.prompt.render(run_input) if agent.prompt else json.dumps(run_input, indent=2)
            trial.step("prompt", f"({agent.model})")
            trial.detail(prompt)
        else:
            trial.step("request", f"{agent.method} {agent.url}")
    except TemplateError as exc:
        return trial.reject("agent", f"{exc}: the run would fail")
    trial.step("verdict", verdict)
    return trial
