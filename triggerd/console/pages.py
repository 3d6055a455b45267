"""The console's pages (SPEC 13), rendered on the server from the store queries /v1 answers from.

Triggers are described by admin.describe_trigger, the function GET /v1/triggers answers with, so
the console shows exactly what the API shows (secrets redacted): its pause, its flow controls,
and (as GET /v1/triggers/{id}) the spend of a trigger with a budget.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from triggerd.clock import isoformat, parse_instant
from triggerd.config.durations import format_duration
from triggerd.config.models import Budget
from triggerd.console.access import SESSION, Session
from triggerd.console.render import (
    RUN_HEADINGS,
    badge,
    button,
    card,
    dl,
    esc,
    fold,
    json_block,
    page,
    progress,
    run_link,
    run_row,
    table,
    when,
)
from triggerd.http.admin import CONFIG, DISPATCHER, SCHEDULES, SOURCES, TOKENS, describe_trigger
from triggerd.runs import Run, RunStatus, Source
from triggerd.store.abc import Spend

PAGE_SIZE = 50
FAILED = ("failed", "timed_out")


def _html(title: str, active: str, request: web.Request, body: str, live: str = "") -> web.Response:
    session: Session = request[SESSION]
    signed_in = bool(request.app[TOKENS])
    text = page(title, active, body, session.csrf, signed_in=signed_in, live=live)
    return web.Response(text=text, content_type="text/html")


def _counts(by_status: dict[str, int]) -> str:
    if not by_status:
        return '<span class="muted">none</span>'
    return " ".join(badge(status, f"{status} {n}") for status, n in sorted(by_status.items()))


def _age(oldest: str | None, now: str) -> str:
    if oldest is None:
        return "—"
    seconds = max(0, int((parse_instant(now) - parse_instant(oldest)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


async def overview(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    now = dispatcher.clock.now()
    hour = await dispatcher.store.run_summary(isoformat(now - timedelta(hours=1)))
    day = await dispatcher.store.run_summary(isoformat(now - timedelta(days=1)))
    failures = sum(day.by_status.get(s, 0) for s in FAILED)
    tiles = (
        f'<div class="tiles"><a class="tile" href="/ui/runs?status=pending"><b>{hour.pending}</b>queued'
        f"<small>oldest {esc(_age(hour.oldest_pending, isoformat(now)))}</small></a>"
        f'<a class="tile {"bad" if failures else ""}" href="/ui/runs?status=failed"><b>{failures}</b>'
        "failed today<small>failed or timed out, 24 h</small></a>"
        f'<a class="tile {"bad" if day.dead_letters else ""}" href="/ui/dead-letters"><b>{day.dead_letters}</b>'
        "dead letters<small>not replayed</small></a></div>"
    )
    runs = card(
        "Runs by status", dl({"last hour": _counts(dict(hour.by_status)), "last day": _counts(dict(day.by_status))})
    )
    schedules: Any = request.app[SCHEDULES]
    upcoming = []
    for trigger in dispatcher.configuration.triggers.values():
        state = schedules(trigger.id) if trigger.schedule is not None else None
        if state and state.get("next_fire_at"):
            upcoming.append((state["next_fire_at"], trigger.id))
    paused = dispatcher.flow.paused  # a paused schedule's next slot is recorded skipped, not run
    rows = [
        f'<tr><td><a href="/ui/triggers#{esc(t)}">{esc(t)}</a>{" " + badge("paused") if t in paused else ""}</td>'
        f"<td>{when(at)}</td></tr>"
        for at, t in sorted(upcoming)[:8]
    ]
    fires = card("Next fires", table(("Trigger", "At"), rows, "No schedule is due."))
    body = tiles + '<div class="grid">' + runs + fires + _configuration(request) + _sources_card(request) + "</div>"
    return _html("Overview", "overview", request, body)


def _configuration(request: web.Request) -> str:
    config: Any = request.app[CONFIG]
    if config is None:
        return card("Configuration", '<p class="muted">not available</p>')
    report = config()
    problems = report.get("problems", [])
    rows = [
        f"<tr><td>{badge('failed' if p.get('severity') == 'error' else 'pending', str(p.get('severity')))}</td>"
        f'<td class="mono">{esc(p.get("file"))}:{esc(p.get("line"))}</td><td>{esc(p.get("message"))}</td></tr>'
        for p in problems
    ]
    state = badge("completed", "healthy") if not problems else badge("failed", f"{len(problems)} problems")
    last = report.get("last_reload") or {}
    summary = dl(
        {
            "state": state,
            "applied": when(report.get("applied_at")),
            "files": esc(len(report.get("files", []))),
            "last reload": (badge("completed", "applied") if last.get("applied") else badge("failed", "rejected"))
            if last
            else '<span class="muted">none since start</span>',
        }
    )
    return card("Configuration", summary + (table(("", "Where", "Problem"), rows, "") if rows else ""))


def _sources_card(request: web.Request) -> str:
    sources: Any = request.app[SOURCES]
    rows = [
        f"<tr><td>{esc(s.get('id'))}</td><td>{esc(s.get('type'))}</td><td>{_source_badge(s)}</td></tr>"
        for s in sources()
    ]
    return card("Sources", table(("Source", "Type", "State"), rows, "No broker sources are configured."))


def _source_badge(source: dict[str, Any]) -> str:
    state = str(source.get("state"))
    return badge({"consuming": "completed", "down": "failed"}.get(state, "pending"), state)


async def triggers(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    stats = await dispatcher.store.trigger_stats()
    skips = await dispatcher.store.skip_counts()
    schedules: Any = request.app[SCHEDULES]
    flow, agents = dispatcher.flow, dispatcher.configuration.agents
    cards = []
    for trigger in sorted(dispatcher.configuration.triggers.values(), key=lambda t: t.id):
        described = describe_trigger(trigger, stats.get(trigger.id), schedules(trigger.id), flow.paused.get(trigger.id))
        agent = agents.get(trigger.agent.id)
        ceilings = {"budget": trigger.budget, "agent budget": agent.budget if agent is not None else None}
        budgets = {}
        if any(ceilings.values()):  # GET /v1/triggers/{id}'s spend, read only where a ceiling needs it
            spent = await flow.spend(trigger, agent)
            scopes = {"budget": "trigger", "agent budget": "agent"}
            budgets = {name: (c, spent[scopes[name]]) for name, c in ceilings.items() if c is not None}
        cards.append(_trigger_card(described, skips.get(trigger.id, {}), budgets))
    body = (
        '<div class="cards">' + "".join(cards) + "</div>" if cards else '<p class="empty">No triggers are loaded.</p>'
    )
    return _html("Triggers", "triggers", request, body)


# What a pause does to each kind of trigger (SPEC 12), said on a paused trigger's card.
PAUSE_EFFECT = {
    "webhook": "its webhook answers 503 with Retry-After",
    "schedule": "its slots are recorded skipped",
    "event": "events do not match it",
}


def _trigger_card(t: dict[str, Any], skips: dict[str, int], budgets: dict[str, tuple[Budget, Spend]]) -> str:
    tid = str(t["id"])
    states = [badge("completed", "enabled") if t.get("enabled") else badge("cancelled", "disabled")]
    if t.get("paused"):
        states.append(badge("paused"))
    what: dict[str, str] = {}
    if t.get("paused"):
        what["paused"] = (
            f"since {when(t.get('paused_at'))}<br><small class=muted>{esc(PAUSE_EFFECT.get(str(t.get('type')), ''))}"
            "; a manual fire still runs</small>"
        )
    if "webhook" in t:
        hook = t["webhook"]
        auth = f' <span class="muted">({esc(hook.get("authentication"))})</span>' if hook.get("authentication") else ""
        what["endpoint"] = f'<span class="mono">{esc(hook.get("method"))} {esc(hook.get("endpoint"))}</span>{auth}'
    if "schedule" in t:
        s = t["schedule"]
        what["cron"] = (
            f'<span class="mono">{esc(s.get("cron"))}</span> <span class="muted">{esc(s.get("timezone"))}</span>'
        )
        nxt = s.get("next_fire_at")
        what["next fire"] = (
            f'{when(nxt)}<br><small class="muted mono">{esc(nxt)} UTC</small>'
            if nxt
            else '<span class="muted">—</span>'
        )
    if "event" in t:
        e = t["event"]
        what["pattern"] = f'<span class="mono">{esc(e.get("pattern"))}</span>'
    what.update(_flow(t))
    what.update({name: _budget(*b) for name, b in budgets.items()})
    state = t.get("state", {})
    last = state.get("last_run")
    what["last run"] = f"{run_link(last['id'])} {badge(last['status'])} {when(last['created_at'])}" if last else "—"
    what["runs"] = _counts(dict(state.get("runs", {})))
    if skips:
        what["skips"] = (
            '<span class="skips">'
            + "".join(
                f'<a class="chip" href="/ui/runs?{esc(urlencode({"trigger": tid, "status": "skipped"}))}">'
                f"{esc(r or 'unspecified')} <b>{n}</b></a>"
                for r, n in sorted(skips.items())
            )
            + "</span>"
        )
    what["agent"] = esc(t.get("agent_id"))
    pause = (
        button("Resume", f"/ui/api/triggers/{tid}/resume", done="Resumed")
        if t.get("paused")
        else button("Pause", f"/ui/api/triggers/{tid}/pause", kind="quiet", done="Paused")
    )
    fire = (
        f'<form class="fire" data-fire="/ui/api/triggers/{esc(tid)}/fire"><label>Input (JSON)'
        '<textarea name="input" rows="3" spellcheck="false">{}</textarea></label>'
        f'<div class="actions"><button type="submit">Fire</button>{pause}</div></form>'
    )
    title = f"{esc(t.get('name') or tid)}"
    sub = f'<p class="muted mono">{esc(tid)} · {esc(t.get("type"))}</p>'
    paused = " paused" if t.get("paused") else ""
    return (
        f'<section class="card trigger{paused}" id="{esc(tid)}"><h2>{title} {"".join(states)}</h2>{sub}'
        f'{dl(what)}<a href="/ui/runs?trigger={esc(tid)}">Runs of this trigger →</a>{fire}</section>'
    )


def _per_key(key: Any) -> str:
    return f' <span class="muted">per</span> <span class="mono">{esc(key)}</span>' if key else ""


def _flow(t: dict[str, Any]) -> dict[str, str]:
    """A trigger's flow controls (SPEC 12) but its budget, as GET /v1/triggers describes them."""
    flow, rows = t.get("flow") or {}, {}
    if flow.get("concurrency_key"):
        rows["concurrency"] = f"{esc(t.get('max_concurrent'))} at a time{_per_key(flow['concurrency_key'])}"
    if debounce := flow.get("debounce"):
        period = format_duration(debounce["period_seconds"])
        rows["debounce"] = f"{esc(period)} after a burst's last firing{_per_key(debounce['key'])}"
    if throttle := flow.get("throttle"):
        rows["throttle"] = (
            f"{esc(throttle['limit'])} starts per {esc(format_duration(throttle['per_seconds']))}"
            f"{_per_key(throttle['key'])}"
        )
    return rows


def _budget(ceiling: Budget, spent: Spend) -> str:
    """Each ceiling with its spend: a meter, and a badge once it is reached (firings are skipped)."""
    lines = []
    for allowed, used, label in (
        (ceiling.tokens_per_day, spent.tokens, "tokens / day"),
        (ceiling.runs_per_hour, spent.runs, "runs / hour"),
    ):
        if allowed is None:
            continue
        over = " " + badge("failed", "reached") if used >= allowed else ""
        lines.append(
            f'<span class="spend"><meter min="0" max="{allowed}" value="{min(used, allowed)}" '
            f'low="{allowed * 0.75:g}" high="{allowed * 0.9:g}" optimum="0"></meter> '
            f"{used:,} of {allowed:,} {label}{over}</span>"
        )
    return "".join(lines)


def run_filters(request: web.Request) -> dict[str, str]:
    """The runs page's filters; an unknown status or source is a 400, as on /v1."""
    q = request.query
    found = {k: q[k] for k in ("trigger", "status", "source") if q.get(k)}
    if "status" in found and found["status"] not in set(RunStatus):
        raise web.HTTPBadRequest(text=f"unknown status {found['status']!r}")
    if "source" in found and found["source"] not in set(Source):
        raise web.HTTPBadRequest(text=f"unknown source {found['source']!r}")
    return found


async def list_filtered(request: web.Request, filters: dict[str, str], before: str | None = None) -> list[Any]:
    status = RunStatus(filters["status"]) if "status" in filters else None
    store = request.app[DISPATCHER].store
    runs: list[Any] = await store.list_runs(
        trigger_id=filters.get("trigger"),
        status=status,
        source=filters.get("source"),
        limit=PAGE_SIZE,
        before=before,
    )
    return runs


def _select(name: str, options: list[str], chosen: str | None) -> str:
    items = [f'<option value="">any {name}</option>']
    items += [f"<option{' selected' if o == chosen else ''}>{esc(o)}</option>" for o in options]
    return f'<select name="{name}" aria-label="{name}">{"".join(items)}</select>'


async def runs(request: web.Request) -> web.Response:
    filters = run_filters(request)
    before = request.query.get("before") or None
    found = await list_filtered(request, filters, before)
    trigger_ids = sorted(request.app[DISPATCHER].configuration.triggers)
    form = (
        '<form class="filters" method="get" action="/ui/runs">'
        + _select("trigger", trigger_ids, filters.get("trigger"))
        + _select("status", list(RunStatus), filters.get("status"))
        + _select("source", list(Source), filters.get("source"))
        + '<button type="submit">Filter</button><a href="/ui/runs">clear</a>'
        + '<span class="live-state" id="live-state">live</span></form>'
    )
    older = ""
    if len(found) == PAGE_SIZE:
        older = f'<p><a href="/ui/runs?{esc(urlencode({**filters, "before": found[-1].id}))}">Older runs →</a></p>'
    live = "" if before else "/ui/events?" + urlencode(filters)
    body = form + table(RUN_HEADINGS, (run_row(r) for r in found), "No runs yet.", body_id="runs") + older
    return _html("Runs", "runs", request, body, live=live)


async def run_detail(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    run = await request.app[DISPATCHER].store.get_run(run_id)
    if run is None:
        raise web.HTTPNotFound(text=f"no run '{run_id}'")
    data = run.to_json()
    actions = []
    if not run.status.is_final:
        actions.append(button("Cancel", f"/ui/api/runs/{run.id}/cancel", confirm="Cancel this run?", kind="danger"))
    else:
        actions.append(button("Replay", f"/ui/api/runs/{run.id}/replay"))
    facts = {
        "status": badge(str(run.status)) + _reason(run),
        "trigger": f'<a href="/ui/triggers#{esc(run.trigger_id)}">{esc(run.trigger_id)}</a>',
        "agent": esc(run.agent_id),
        "source": esc(run.source),
        "created": when(run.created_at),
        "started": when(run.started_at),
        "finished": when(run.finished_at),
        "nominal time": when(run.nominal_time),
        **(
            {"not before": when(run.next_attempt_at)} if run.status is RunStatus.PENDING and run.next_attempt_at else {}
        ),
        "idempotency key": f'<span class="mono">{esc(run.idempotency_key)}</span>' if run.idempotency_key else "—",
        "replay of": run_link(run.replay_of) if run.replay_of else "—",
    }
    if run.dead_letter:
        facts["dead letter"] = badge("failed", "yes")
    shown = f'data-status="{esc(run.status)}" data-progress="{esc(progress(run))}"'
    body = f'<span id="run-status" {shown} hidden></span>'
    body += f'<div class="actions top">{"".join(actions)}</div><div class="grid">' + card("Run", dl(facts))
    body += card("Attempts", _timeline(data.get("attempts", [])))
    body += card("Usage", _usage(data.get("usage"), data.get("steps")))
    body += "</div>" + card("Input", json_block(data.get("input")), "wide")
    for key, title in (("prompt", "Rendered prompt"), ("argv", "Command")):
        if data.get(key) is not None:
            body += card(title, json_block(data[key]), "wide")
    if data.get("error"):
        body += card("Error", fold(str(data["error"])), "wide error")
    body += card("Output", json_block(data.get("output")), "wide")
    if data.get("steps"):
        body += card("Tool calls", _steps(data["steps"], run.status.is_final), "wide")
    live = "" if run.status.is_final else "/ui/events?" + urlencode({"run": run.id})
    return _html(f"Run {run.id}", "runs", request, body, live=live)


# Why a run was skipped or is held back (SPEC 5.2, 12), said beside its reason on its page.
SKIPPED = {
    "overlap": "a run of its trigger (or concurrency key) was under way (overlap: skip)",
    "queue_full": "its trigger's queue was full (max_queued)",
    "missed": "its schedule slot passed while no daemon ran",
    "paused": "its trigger was paused",
    "budget": "its trigger or agent was over budget",
    "debounced": "a later firing of the same burst replaced it",
}
WAITING = {
    "debounced": "it waits for its burst to end; a later firing of the burst replaces it",
    "throttled": "it waits for a place in its trigger's throttle window",
}


def _reason(run: Run) -> str:
    if not run.reason:
        return ""
    explained = (SKIPPED if run.status is RunStatus.SKIPPED else WAITING).get(run.reason)
    return f' <span class="reason-name">{esc(run.reason)}</span>' + (
        f'<br><small class="muted">{esc(explained)}</small>' if explained else ""
    )


def _timeline(attempts: list[dict[str, Any]]) -> str:
    if not attempts:
        return '<p class="muted">No attempt has started.</p>'
    items = [
        f'<li class="t-{esc(a.get("status"))}"><b>Attempt {esc(a.get("number"))}</b> {badge(a.get("status"))}'
        f"<br>{when(a.get('started_at'))} → {when(a.get('finished_at'), 'running')}"
        + (f'<pre class="err">{esc(a.get("error"))}</pre>' if a.get("error") else "")
        + "</li>"
        for a in attempts
    ]
    return '<ol class="timeline">' + "".join(items) + "</ol>"


def _steps(steps: Any, final: bool) -> str:
    """The tool calls (SPEC 5.1) as a timeline: turn and tool, when, the input, then the output or the error."""
    if not isinstance(steps, list):
        return json_block(steps)
    return '<ol class="timeline steps">' + "".join(_step(step, final) for step in steps) + "</ol>"


def _step(step: Any, final: bool) -> str:
    if not isinstance(step, dict):
        return f"<li>{json_block(step)}</li>"
    if "error" in step:
        state, result = "failed", f"<h3>Error</h3>{fold(str(step['error']), 'err')}"
    elif "output" in step:
        state, result = "completed", f"<h3>Output</h3>{json_block(step['output'])}"
    else:  # recorded as the call started: still running, or cut short by a crash if the run has ended
        state, result = ("unfinished" if final else "running"), ""
    attempt = f" · attempt {esc(step.get('attempt'))}" if step.get("attempt") else ""
    took = _took(step.get("started_at"), step.get("finished_at"))
    return (
        f'<li class="step t-{state}"><h3 class="step-head"><span>Turn {esc(step.get("turn"))}</span>'
        f'<span class="mono">{esc(step.get("tool"))}</span>{badge(state, "error" if state == "failed" else state)}'
        f"</h3><small class=muted>{when(step.get('started_at'))} → {when(step.get('finished_at'), 'running')}"
        f"{took}{attempt}</small><h3>Input</h3>{json_block(step.get('input'))}{result}</li>"
    )


def _took(started: Any, finished: Any) -> str:
    try:
        seconds = (parse_instant(str(finished)) - parse_instant(str(started))).total_seconds()
    except ValueError:  # not finished, or not an instant: no duration rather than a 500
        return ""
    return f" ({seconds:.1f} s)" if seconds >= 0.1 else f" ({seconds * 1000:.0f} ms)"


def _usage(usage: Any, steps: Any) -> str:
    """Tokens summed over the model's turns, with a total; what is not a count (a breakdown) as JSON."""
    if not isinstance(usage, dict):
        return json_block(usage)
    items = {
        str(key).replace("_", " "): f"{value:,}" if _count(value) else json_block(value) for key, value in usage.items()
    }
    if _count(usage.get("input_tokens")) and _count(usage.get("output_tokens")):
        items["total tokens"] = f"<b>{usage['input_tokens'] + usage['output_tokens']:,}</b>"
    if isinstance(steps, list) and steps:
        items["tool calls"] = str(len(steps))
    return dl(items)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def dead_letters(request: web.Request) -> web.Response:
    store = request.app[DISPATCHER].store
    runs = await store.dead_letters(PAGE_SIZE)
    messages = await store.dead_messages(PAGE_SIZE)
    rows = [
        f'<tr class="dead" data-id="{esc(r.id)}"><td><input type="checkbox" class="pick" value="{esc(r.id)}" '
        f'aria-label="select {esc(r.id)}"></td>'
        f"<td>{run_link(r.id)}</td><td>{esc(r.trigger_id)}</td><td>{badge(str(r.status))}</td>"
        f'<td class="reason">{esc(r.error or r.reason)}</td><td>{json_block(r.input)}</td>'
        f"<td>{when(r.finished_at)}</td>"
        f"<td>{button('Replay', f'/ui/api/runs/{r.id}/replay')}</td></tr>"
        for r in runs
    ]
    bulk = (
        '<div class="bulk"><button type="button" class="quiet" data-pick-all>Select all</button>'
        '<button type="button" data-bulk-replay>Replay selected…</button>'
        '<div class="preview" id="bulk-preview" hidden><span id="bulk-count"></span>'
        '<button type="button" data-bulk-confirm>Replay them</button>'
        '<button type="button" class="quiet" data-bulk-cancel>Cancel</button></div></div>'
    )
    headings = ("", "Run", "Trigger", "Status", "Reason", "Payload", "Failed", "")
    body = card(
        "Runs", (bulk if rows else "") + table(headings, rows, "No dead letters: every failure was replayed."), "wide"
    )
    message_rows = [
        f"<tr><td>{esc(m.source_id)}</td><td>{esc(m.reason)}</td><td>{fold(m.payload.decode('utf-8', 'replace'))}</td>"
        f"<td>{when(m.received_at)}</td></tr>"
        for m in messages
    ]
    body += card(
        "Broker messages",
        table(("Source", "Reason", "Payload", "Received"), message_rows, "No poison messages."),
        "wide",
    )
    return _html("Dead letters", "dead-letters", request, body)


async def sources(request: web.Request) -> web.Response:
    report: Any = request.app[SOURCES]
    found = report()
    rows = []
    for s in found:
        messages = " ".join(
            f'<span class="chip">{esc(k)} {esc(v)}</span>' for k, v in sorted((s.get("messages") or {}).items())
        )
        rows.append(
            f"<tr><td>{esc(s.get('id'))}</td><td>{esc(s.get('type'))}</td><td class=mono>{esc(s.get('target'))}</td>"
            f"<td>{_source_badge(s)} {when(s.get('since'))}</td>"
            f"<td>{messages or '—'}</td><td>{esc(s.get('in_flight'))}</td><td>{esc(s.get('lag'))}</td>"
            f'<td class="reason">{esc(s.get("last_error") or "")}</td></tr>'
        )
    headings = ("Source", "Type", "Target", "State", "Messages", "In flight", "Lag", "Last error")
    body = table(headings, rows, "No broker sources are configured (SPEC 5.4).")
    return _html("Sources", "sources", request, body)
