"""`triggerd test`: a webhook trigger against a sample request, or an event trigger against sample
events, offline (SPEC 6). Nothing is dispatched; the output ends with the answer the daemon would give."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from multidict import CIMultiDict

from triggerd.clock import isoformat
from triggerd.conditions import AllOf, Clause, ClauseResult, Condition, Not, Scope, evaluate, explain
from triggerd.config.models import (
    AnthropicAgent,
    AnyAgent,
    Authentication,
    CommandAgent,
    Configuration,
    Origin,
    SourceDefinition,
    Trigger,
)
from triggerd.config.problems import Problem
from triggerd.errors import AuthFailure, MissingInput, PathTooBroad, TemplateError
from triggerd.flow_trial import group_lines, has_flow_control
from triggerd.http.auth import DELIVERY_HEADERS, Verified, Verifier
from triggerd.mapping import build_input
from triggerd.masking import mask
from triggerd.runs import FlowKeys
from triggerd.sources.brokers.abc import Message, target
from triggerd.sources.brokers.convert import Poison, message_context, to_event
from triggerd.sources.bus import event_context, group_key
from triggerd.sources.events import BadEvent, EventIndex, parse_events, source_matches
from triggerd.sources.webhook import BadBody, idempotency_key, parse_body, too_old, webhook_context

RUN_ID = "<run id>"  # the daemon makes one when it commits the run; a dry run commits nothing


def _scheme(auth: Authentication) -> str:
    """The authentication as verified: generic hmac on a provider's header names the preset."""
    return str(auth.type) if auth.scheme == auth.type.value else f"{auth.type} ({auth.scheme} preset)"


def literal(value: Any) -> str:
    """A value as the operator wrote it in YAML/JSON (true, null, "text"), not as Python's repr."""
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class Trial:
    """What the daemon would do with the sample, step by step; `accepted` is the verdict."""

    trigger: Trigger
    lines: list[str] = field(default_factory=list)
    accepted: bool = True
    keys: FlowKeys | None = None  # the last firing's flow-control groups, if the trigger has flow control

    def step(self, title: str, text: str = "") -> None:
        self.lines.append(mask(f"{title:<16}{text}".rstrip()))  # printed: no substituted secret (SPEC 2.3)

    def detail(self, text: str) -> None:
        self.lines.extend(f"  {line}".rstrip() for line in mask(text).splitlines())

    def condition(self, title: str, condition: Condition, context: dict[str, Any], scope: Scope) -> bool:
        """Show a condition's verdict and every clause; returns the verdict."""
        # The daemon's own evaluate() gives the verdict; the tree below only displays it.
        verdict = evaluate(condition, context, scope)
        shown = _explained(condition, context, scope, top=True)[1]
        self.step(title, "true" if verdict else "false")
        self.detail("\n".join(shown))
        return verdict

    def answer(self, status: int, body: Any, headers: Any = None) -> Trial:
        """The daemon's answer: JSON bodies as JSON, a static text body as text.

        A disabled trigger is tried as if enabled, but the daemon's answer is that it is not there.
        """
        if not self.trigger.enabled:
            self._show("if enabled", status, body, headers)
            self.accepted = False
            if self.trigger.webhook is not None:
                status, body, headers = 404, {"error": f"no webhook at {self.trigger.webhook.endpoint}"}, None
            else:
                body = {**body, "matched": [], "run_ids": []}
        self._show("answer", status, body, headers)
        return self

    def _show(self, title: str, status: int, body: Any, headers: Any) -> None:
        shown = body if isinstance(body, str) else "(no body)" if body is None else literal(body)
        self.step(title, f"{status} {shown}")
        for name, value in (headers or {}).items():
            self.detail(f"{name}: {value}")

    def reject(self, title: str, text: str, status: int, body: Any) -> Trial:
        self.step(title, text)
        self.accepted = False
        return self.answer(status, body)


def _disabled(trigger: Trigger) -> str:
    return "" if trigger.enabled else ", disabled: tried as if enabled"


def _mark(result: bool) -> str:
    return "true " if result else "false"


def _clause(result: ClauseResult) -> tuple[str, str]:
    actual = literal(result.actual) if result.found else "missing"
    return f"{result.field} {result.operator} {literal(result.expected)}", f"(actual: {actual})"


def _explained(condition: Condition, context: Any, scope: Scope, top: bool = False) -> tuple[bool, list[str]]:
    """The verdict and one line per clause; groups nest, `not` reads `not (...)`."""
    if isinstance(condition, Clause):
        result = explain(condition, context, scope)[1][0]
        text, actual = _clause(result)
        return result.result, [f"{_mark(result.result)} {text} {actual}"]
    if isinstance(condition, Not):
        if isinstance(condition.item, Clause):
            result = explain(condition.item, context, scope)[1][0]
            text, actual = _clause(result)
            return not result.result, [f"{_mark(not result.result)} not ({text}) {actual}"]
        inner, lines = _explained(condition.item, context, scope)
        return not inner, [f"{_mark(not inner)} not (", *(f"  {line}" for line in lines), "      )"]
    verdicts, lines = [], []
    for item in condition.items:
        verdict, shown = _explained(item, context, scope)
        verdicts.append(verdict)
        lines.extend(shown)
    verdict = all(verdicts) if isinstance(condition, AllOf) else any(verdicts)
    if top and isinstance(condition, AllOf):
        return verdict, lines  # the step line already shows the verdict of the outermost `all`
    kind = "all of" if isinstance(condition, AllOf) else "any of"
    return verdict, [f"{_mark(verdict)} {kind}:", *(f"  {line}" for line in lines)]


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
    trial.step("trigger", f"{trigger.id}: {webhook.method} {webhook.endpoint} ({trigger.origin}){_disabled(trigger)}")
    auth = webhook.authentication
    verified = Verified()
    if auth is None:
        trial.step("authentication", "none")
    elif not verify:
        trial.step("authentication", f"{_scheme(auth)}: skipped (use --verify)")
        delivery = DELIVERY_HEADERS.get(auth.scheme)
        verified = Verified(delivery_id=CIMultiDict(headers).get(delivery) if delivery else None)
    else:
        try:
            verified = Verifier(auth).verify(CIMultiDict(headers), body, now)
        except AuthFailure as exc:
            return trial.reject(
                "authentication", f"{_scheme(auth)}: FAILED: {exc}", 401, {"error": "authentication failed"}
            )
        trial.step("authentication", f"{_scheme(auth)}: ok")
    try:
        parsed = parse_body(content_type, body)
    except BadBody as exc:
        return trial.reject("body", str(exc), 400, {"error": str(exc)})
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
    if too_old(trigger, verified, now):
        return trial.reject(
            "max_event_age",
            "the signed timestamp is too old",
            200,
            {"status": "dropped", "reason": "max_event_age", "trigger_id": trigger.id},
        )
    step = "filter"  # as the daemon: a JSONPath past its node bound is a 422, wherever it is
    try:
        if webhook.filter is None:
            trial.step("filter", "none")
        elif not trial.condition("filter", webhook.filter, context, Scope.WEBHOOK):
            trial.accepted = False
            return trial.answer(200, {"status": "filtered", "trigger_id": trigger.id})
        step = "input mapping"
        run_input = build_input(trigger.agent.input, trigger.agent.input_mapping, context)
        step = "idempotency key"
        key = idempotency_key(trigger, context, verified)
    except (MissingInput, PathTooBroad) as exc:
        return trial.reject(step, str(exc), 422, {"error": str(exc), "path": exc.path})
    source: str | None = None
    if trigger.idempotency_key is not None:
        source = trigger.idempotency_key.text
    elif key is not None and auth is not None:
        source = f"{DELIVERY_HEADERS.get(auth.scheme, 'delivery id')}, the {auth.scheme} default"
    _preview(trial, configuration.agents[trigger.agent.id], context, run_input)
    trial.step("idempotency key", f"{literal(key)}   ({source})" if source else "none (each request starts a run)")
    _groups(trial, context)
    if webhook.response is not None:
        response = webhook.response
        return trial.answer(response.status, response.body, response.headers)
    return trial.answer(202, {"run_id": RUN_ID, "trigger_id": trigger.id, "status": "pending"})


def try_event(configuration: Configuration, trigger: Trigger, body: Any, now: datetime) -> Trial:
    """Events in the order given, counted as the daemon counts them (all received now, within the window)."""
    match = trigger.event
    assert match is not None
    trial = Trial(trigger)
    trial.step("trigger", f"{trigger.id}: events {match.pattern} ({trigger.origin}){_disabled(trigger)}")
    try:
        events = parse_events(body, now, default_source="cli")
    except BadEvent as exc:
        return trial.reject("event", str(exc), 400, {"error": str(exc)})
    index = EventIndex.build([replace(trigger, enabled=True)])  # a disabled one is tried as if enabled
    windows: dict[str, list[dict[str, Any]]] = {}
    firings: list[dict[str, Any]] = []
    matched = False
    for number, event in enumerate(events, 1):
        if len(events) > 1:
            trial.step("event", f"{number} of {len(events)}: {event.id}")
        if not any(t.id == trigger.id for t in index.candidates(event.type)):
            trial.step("type", f"{event.type} does not match {match.pattern}")
            continue
        trial.step("type", f"{event.type} matches {match.pattern}")
        sources = ", ".join(match.sources) or "any"
        if not source_matches(trigger, event.source):
            trial.step("source", f"{event.source} is not one of: {sources}")
            continue
        trial.step("source", f"{event.source} (allowed: {sources})")
        payload = event.to_json()
        alone = event_context(trigger, payload, [payload])
        try:
            if match.condition is None:
                trial.step("condition", "none")
            elif not trial.condition("condition", match.condition, alone, Scope.EVENT):
                continue
            group = group_key(trigger, alone) if match.count_threshold is not None else ""
        except PathTooBroad as exc:
            trial.accepted = False
            trial.step("condition", f"{exc}: the daemon logs this and starts no run")
            continue
        matched = True
        if match.count_threshold is None:
            firings.append(alone)
            continue
        window = windows.setdefault(group, [])
        window.append(payload)
        fires = len(window) >= match.count_threshold
        trial.step(
            "counting",
            f"count {len(window)} of {match.count_threshold} within {match.window or 0:g}s, group "
            f"{group or '(all)'}: "
            + ("fires" if fires else f"no run yet ({match.count_threshold - len(window)} more to fire)"),
        )
        if fires:
            _counted(trial, group, window)
            firings.append(event_context(trigger, payload, window))
            windows[group] = []
    for group, window in windows.items():
        if window:
            _counted(trial, group, window)
    run_ids: list[str] = []
    for context in firings:
        try:
            run_input = build_input(trigger.agent.input, trigger.agent.input_mapping, context)
        except (MissingInput, PathTooBroad) as exc:
            trial.accepted = False
            trial.step("input mapping", f"{exc}: the daemon logs this and starts no run")
            continue
        _preview(trial, configuration.agents[trigger.agent.id], context, run_input)
        _groups(trial, context)
        run_ids.append(RUN_ID)
    trial.accepted = trial.accepted and matched
    ids = [event.id for event in events]
    return trial.answer(202, {"event_ids": ids, "matched": [trigger.id] if matched else [], "run_ids": run_ids})


def _groups(trial: Trial, context: dict[str, Any]) -> None:
    """The flow-control groups the firing falls in (SPEC 12); the CLI then asks a running daemon about them."""
    if has_flow_control(trial.trigger):
        trial.keys, steps = group_lines(trial.trigger, context)
        for title, text in steps:
            trial.step(title, text)


def _counted(trial: Trial, group: str, window: list[dict[str, Any]]) -> None:
    trial.step("counted events", f"group {group or '(all)'}: {len(window)}")
    trial.detail("\n".join(literal(event) for event in window))


def _preview(trial: Trial, agent: AnyAgent, context: dict[str, Any], run_input: dict[str, Any]) -> None:
    """The input mapping's results, the run input, and the argv or prompt the agent would get."""
    mapping = trial.trigger.agent.input_mapping
    if mapping:
        trial.step("input mapping")
        trial.detail("\n".join(f"{rule.key} = {literal(run_input.get(rule.key))}   ({rule.path})" for rule in mapping))
    trial.step("run input")
    trial.detail(json.dumps(run_input, indent=2, ensure_ascii=False))
    try:
        if isinstance(agent, CommandAgent):
            trial.step("argv", literal([t.render(run_input) for t in agent.command]))
        elif isinstance(agent, AnthropicAgent):
            prompt = agent.prompt.render(run_input) if agent.prompt else json.dumps(run_input, indent=2)
            trial.step("prompt", f"({agent.model})")
            trial.detail(prompt)
            if agent.tools:
                # What the model receives beside the prompt, so that an operator sees the whole offer.
                trial.step("tools", f"({len(agent.tools)}, at most {agent.max_turns} model calls per attempt)")
                trial.detail("\n".join(literal(definition) for definition in agent.tool_definitions()))
        else:
            trial.step("request", f"{agent.method} {agent.url}")
    except TemplateError as exc:
        trial.accepted = False
        trial.step("agent", f"{exc}: the run would fail")


def own_problems(problems: Sequence[Problem], *origins: Origin) -> list[Problem]:
    """The problems inside the YAML documents that begin at these origins (a trigger and its agent)."""
    spans = [_document_span(origin) for origin in origins]
    return [
        p
        for p in problems
        if any(
            p.file == origin.file and first <= p.line <= last
            for origin, (first, last) in zip(origins, spans, strict=True)
        )
    ]


def _document_span(origin: Origin) -> tuple[int, int]:
    """First and last line of the document holding the definition (the file loaded, so it parses)."""
    try:
        nodes = list(yaml.compose_all(Path(origin.file).read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return origin.line, origin.line
    for node in nodes:
        if node is not None and node.start_mark.line + 1 <= origin.line <= node.end_mark.line + 1:
            return node.start_mark.line + 1, node.end_mark.line + 1
    return origin.line, origin.line


def try_message(
    configuration: Configuration, trigger: Trigger, source: SourceDefinition, message: Message, now: datetime
) -> Trial:
    """A broker message as `source` would turn it into an event, then that event against the trigger.

    A message that cannot become an event is what the daemon stores as a dead letter (and
    acknowledges); the trial says so and is not accepted.
    """
    head = Trial(trigger)
    head.step("broker", f"source {source.id}: {source.type} {target(source)} ({source.origin})")
    head.step("message", f"{len(message.body)} bytes, id {message.broker_id}")
    head.detail(literal(message_context(message, now)))
    try:
        event = to_event(source, message, now)
    except Poison as exc:
        head.step("dead letter", f"{exc}: the daemon stores the message as a dead letter and acknowledges it")
        head.accepted = False
        return head
    head.step("event", literal(event.to_json()))
    head.step(
        "dedupe",
        f"a redelivery of event id {event.id} within {source.dedupe_window:g}s fires nothing; "
        f"its runs carry the idempotency key event:{source.id}:{event.id}",
    )
    trial = try_event(configuration, trigger, [event.to_json()], now)
    trial.lines[:0] = head.lines
    return trial
