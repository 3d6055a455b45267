"""Trigger documents -> Trigger models, with the checks one document can make alone."""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from datetime import datetime
from typing import Any

from triggerd.conditions import Condition, parse_condition
from triggerd.config.documents import Document
from triggerd.config.models import (
    AgentCall,
    Authentication,
    AuthType,
    Budget,
    Debounce,
    EventMatch,
    MappingRule,
    Origin,
    Overlap,
    RateLimit,
    RetryPolicy,
    Schedule,
    Secret,
    StaticResponse,
    Throttle,
    Trigger,
    TriggerType,
    Webhook,
)
from triggerd.errors import CronError, PatternError
from triggerd.mapping import JsonPath
from triggerd.patterns import compile_regex
from triggerd.sources.cron import check_cron

RESERVED_PATHS = ("/v1", "/ui", "/healthz", "/readyz", "/metrics")  # /ui: the console (SPEC 13)

# What the warning for generic hmac on a provider's header (models.PRESETS) says it verifies.
_PRESET_TEXT = {"github-sha1": "GitHub's 'sha1=<hex HMAC-SHA1 of the body>' with delivery id X-GitHub-Delivery"}


def slug(text: str) -> str:
    """A valid id from free text: "Daily Sales Report" -> "daily-sales-report"."""
    return re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-_.")


def fingerprint(doc: Document) -> str:
    """A digest of the whole document, to tell a changed definition from an unchanged one."""
    canonical = json.dumps(doc.value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def definition_id(doc: Document, kind: str, stem: str) -> str:
    body = doc.value[kind]
    explicit = body.get("id")
    if isinstance(explicit, str):
        return explicit
    derived = slug(body["name"]) if isinstance(body.get("name"), str) else slug(stem)
    if not derived:
        doc.fail(f"/{kind}", f"cannot derive an id from the name or file name; set {kind}.id", key=True)
    return derived


def build_trigger(doc: Document, trigger_id: str) -> Trigger | None:
    """The Trigger of a schema-valid document, or None when a check failed (see doc.problems)."""
    t: dict[str, Any] = doc.value["trigger"]
    kind = TriggerType(t["type"])
    retry = t.get("retry", {})
    key = t.get("idempotency_key")
    trigger = Trigger(
        id=trigger_id,
        name=t.get("name"),
        description=t.get("description"),
        type=kind,
        enabled=t.get("enabled", True),
        agent=_agent_call(doc, t["agent"]),
        schedule=_schedule(doc, t["schedule"]) if kind is TriggerType.SCHEDULE else None,
        webhook=_webhook(doc, t["webhook"], trigger_id) if kind is TriggerType.WEBHOOK else None,
        event=_event(doc, t["event"]) if kind is TriggerType.EVENT else None,
        max_concurrent=t.get("max_concurrent", 1),
        overlap=Overlap(t.get("overlap", "queue")),
        max_queued=t.get("max_queued", 100),
        timeout_seconds=float(t.get("timeout_seconds", 3600)),
        retry=RetryPolicy(
            max_attempts=retry.get("max_attempts", 1),
            backoff=doc.duration("/trigger/retry/backoff", retry.get("backoff", "10s")),
            max_backoff=doc.duration("/trigger/retry/max_backoff", retry.get("max_backoff", "10m")),
        ),
        idempotency_key=doc.jsonpath("/trigger/idempotency_key", key) if key is not None else None,
        dedupe_window=doc.duration("/trigger/dedupe_window", t.get("dedupe_window", "24h")),
        max_event_age=(
            None if t.get("max_event_age") is None else doc.duration("/trigger/max_event_age", t["max_event_age"])
        ),
        concurrency_key=_optional_path(doc, "/trigger/concurrency_key", t.get("concurrency_key")),
        debounce=_debounce(doc, t["debounce"]) if "debounce" in t else None,
        throttle=_throttle(doc, t["throttle"]) if "throttle" in t else None,
        budget=budget(t.get("budget")),
        origin=Origin(doc.file, *_line_col(doc, "/trigger")),
        fingerprint=fingerprint(doc),
    )
    return None if doc.has_errors else trigger


def _optional_path(doc: Document, pointer: str, text: str | None) -> JsonPath | None:
    return doc.jsonpath(pointer, text) if text is not None else None


def _period(doc: Document, pointer: str, value: object) -> float:
    """A flow-control period: a duration above zero (a zero period would mean no control at all)."""
    known = len(doc.problems)
    seconds = doc.duration(pointer, value)
    if seconds <= 0 and len(doc.problems) == known:  # (a duration that did not parse is reported already)
        doc.fail(pointer, "must be longer than 0 seconds")
    return seconds


def _debounce(doc: Document, d: dict[str, Any]) -> Debounce:
    return Debounce(
        _period(doc, "/trigger/debounce/period", d["period"]),
        _optional_path(doc, "/trigger/debounce/key", d.get("key")),
    )


def _throttle(doc: Document, t: dict[str, Any]) -> Throttle:
    return Throttle(
        t["limit"],
        _period(doc, "/trigger/throttle/per", t["per"]),
        _optional_path(doc, "/trigger/throttle/key", t.get("key")),
    )


def budget(b: dict[str, Any] | None) -> Budget | None:
    """A trigger's or an agent's budget (schema-valid: at least one ceiling set)."""
    return None if b is None else Budget(b.get("tokens_per_day"), b.get("runs_per_hour"))


def _line_col(doc: Document, pointer: str) -> tuple[int, int]:
    mark = doc.mark(pointer, key=True)
    return mark.line, mark.column


def _agent_call(doc: Document, a: dict[str, Any]) -> AgentCall:
    if "input" in a and "input_template" in a:
        doc.fail("/trigger/agent/input_template", "give 'input' or 'input_template', not both", key=True)
    static = a.get("input", a.get("input_template", {}))
    rules = []
    for name, spec in a.get("input_mapping", {}).items():
        pointer = f"/trigger/agent/input_mapping/{name}"
        if isinstance(spec, str):
            path, required, default = doc.jsonpath(pointer, spec), False, None
        else:
            path = doc.jsonpath(f"{pointer}/path", spec["path"])
            required, default = spec.get("required", False), spec.get("default")
        if path is not None:
            rules.append(MappingRule(name, path, required, default))
    return AgentCall(a["id"], static, tuple(rules))


def _instant(doc: Document, pointer: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        doc.fail(pointer, f"{text!r} is not an RFC 3339 date-time (e.g. 2026-01-01T09:00:00-05:00)")
        return None
    if value.tzinfo is None:
        doc.fail(pointer, f"{text!r} has no UTC offset; write e.g. {text}Z or {text}+01:00")
        return None
    return value


def _schedule(doc: Document, s: dict[str, Any]) -> Schedule:
    try:
        cron = check_cron(s["cron"])
    except CronError as exc:
        doc.fail("/trigger/schedule/cron", str(exc))
        cron = s["cron"]
    zone = s.get("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        doc.fail(
            "/trigger/schedule/timezone",
            f"unknown time zone {zone!r} (use an IANA name such as 'America/New_York' or 'UTC')",
        )
    start = _instant(doc, "/trigger/schedule/start_date", s.get("start_date"))
    end = _instant(doc, "/trigger/schedule/end_date", s.get("end_date"))
    if start is not None and end is not None and start > end:
        doc.fail("/trigger/schedule/end_date", f"end_date {s['end_date']} is before start_date {s['start_date']}")
    return Schedule(
        cron=cron,
        timezone=zone,
        start_date=start,
        end_date=end,
        jitter_seconds=s.get("jitter_seconds", 0),
        catchup_window=doc.duration("/trigger/schedule/catchup_window", s.get("catchup_window", "1h")),
    )


def _webhook(doc: Document, w: dict[str, Any], trigger_id: str) -> Webhook:
    p = "/trigger/webhook"
    endpoint = w.get("endpoint", f"/webhooks/{trigger_id}")
    if any(endpoint == r or endpoint.startswith(r + "/") for r in RESERVED_PATHS):
        doc.fail(f"{p}/endpoint", f"endpoint {endpoint} is reserved for triggerd's own API")
    if "{" in endpoint or "}" in endpoint or "?" in endpoint or "#" in endpoint:
        doc.fail(f"{p}/endpoint", f"endpoint {endpoint} may not contain '{{', '}}', '?' or '#'")
    if "ip_allowlist" in w and "ip_whitelist" in w:
        doc.fail(f"{p}/ip_whitelist", "give 'ip_allowlist' or 'ip_whitelist', not both", key=True)
    allow_key = "ip_allowlist" if "ip_allowlist" in w else "ip_whitelist"
    rate = w.get("rate_limit")
    response = w.get("response")
    return Webhook(
        endpoint=endpoint,
        method=w.get("method", "POST"),
        authentication=_authentication(doc, w["authentication"]) if "authentication" in w else None,
        ip_allowlist=doc.networks(f"{p}/{allow_key}", w.get(allow_key, [])),
        rate_limit=(RateLimit(rate["requests"], doc.duration(f"{p}/rate_limit/per", rate["per"])) if rate else None),
        max_body_bytes=w.get("max_body_bytes"),
        filter=_condition(doc, f"{p}/filter", w["filter"]) if "filter" in w else None,
        response=(
            StaticResponse(response.get("status", 202), response.get("body"), response.get("headers", {}))
            if response is not None
            else None
        ),
    )


def _authentication(doc: Document, a: dict[str, Any]) -> Authentication:
    p = "/trigger/webhook/authentication"
    kind = AuthType(a["type"])
    if "secret" in a and "secrets" in a:
        doc.fail(f"{p}/secrets", "give 'secret' or 'secrets', not both", key=True)
    elif "secret" not in a and "secrets" not in a:
        doc.fail(p, f"authentication type '{kind}' needs 'secret' (or 'secrets' for rotation)")
    header = a.get("header")
    secrets = [a["secret"]] if "secret" in a else a.get("secrets", [])
    auth = Authentication(
        type=kind,
        secrets=tuple(Secret(s) for s in secrets),
        header=header,
        algorithm=a.get("algorithm", "sha256"),
        encoding=a.get("encoding", "hex"),
        prefix=a.get("prefix", ""),
        username=a.get("username"),
        tolerance=doc.duration(f"{p}/tolerance", a.get("tolerance", "5m")),
    )
    if auth.scheme != auth.type.value:
        preset = auth.scheme
        scheme = _PRESET_TEXT.get(preset, f"exactly as type '{preset}'")
        ignored = [key for key in ("algorithm", "encoding", "prefix") if key in a]
        doc.warn(
            f"{p}/header",
            f"generic hmac on header {header} is verified with the {preset} preset, {scheme}, "
            "not as an HMAC of the bare body" + (f" ({', '.join(ignored)} ignored)" if ignored else ""),
        )
    elif kind is AuthType.HMAC and header and header.lower() == "x-gitlab-token":
        doc.warn(f"{p}/header", "GitLab sends its token in X-Gitlab-Token, not a signature: use type 'gitlab'")
    return auth


def _condition(doc: Document, pointer: str, raw: Any) -> Condition | None:
    condition, errors = parse_condition(raw, pointer)
    for error in errors:
        doc.fail(error.pointer, error.message)
    return condition


def _event(doc: Document, e: dict[str, Any]) -> EventMatch:
    p = "/trigger/event"
    pattern = e["pattern"]
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            compile_regex(pattern[1:-1])
        except PatternError as exc:
            doc.fail(f"{p}/pattern", f"regular expression {pattern!r} does not compile: {exc}")
    source = e.get("source", [])
    raw_condition = e.get("condition")
    threshold, threshold_at = e.get("count_threshold"), f"{p}/count_threshold"
    window, window_at = e.get("window"), f"{p}/window"
    if isinstance(raw_condition, dict) and "field" not in raw_condition:
        # Inside a shorthand condition these two are the counting settings, not fields (SPEC 3.4).
        raw_condition = dict(raw_condition)
        for name in ("count_threshold", "window"):
            if name in raw_condition:
                if name in e:
                    doc.fail(
                        f"{p}/condition/{name}",
                        f"'{name}' is set both under event and in its condition",
                        key=True,
                    )
                if name == "count_threshold":
                    threshold, threshold_at = raw_condition.pop(name), f"{p}/condition/{name}"
                else:
                    window, window_at = raw_condition.pop(name), f"{p}/condition/{name}"
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1):
        doc.fail(threshold_at, f"count_threshold must be a whole number >= 1, not {threshold!r}")
    window_seconds = doc.duration(window_at, window) if window is not None else None
    if threshold is not None and window is None:
        doc.fail(threshold_at, "count_threshold needs a window (e.g. window: 5m)", key=True)
    if window is not None and threshold is None:
        doc.warn(window_at, "window has no effect without count_threshold", key=True)
    group_by = e.get("group_by")
    return EventMatch(
        pattern=pattern,
        sources=(source,) if isinstance(source, str) else tuple(source),
        condition=_condition(doc, f"{p}/condition", raw_condition) if raw_condition is not None else None,
        count_threshold=threshold if isinstance(threshold, int) else None,
        window=window_seconds,
        group_by=doc.jsonpath(f"{p}/group_by", group_by) if group_by is not None else None,
    )
