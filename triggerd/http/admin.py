"""The admin API under /v1 (SPEC 7.2): triggers, runs, cancel, replay, fire, dead letters."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from triggerd.config.models import Configuration, Trigger
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.dispatch.firings import Submitted
from triggerd.errors import Conflict, NotFound, StoreError, Unavailable
from triggerd.http.cloudevents import events_from_http
from triggerd.http.openapi import openapi
from triggerd.http.responses import Handler, error, json_response
from triggerd.runs import Run, RunStatus
from triggerd.sources.bus import EventBus
from triggerd.sources.events import BadEvent
from triggerd.store.abc import TriggerStats

log = logging.getLogger("triggerd.admin")
GROUP_KINDS = ("concurrency", "throttle", "debounce")  # flow-control groups GET /v1/triggers/{id} reports on

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
TOKENS = web.AppKey("tokens", tuple)
ScheduleState = Callable[[str], dict[str, Any] | None]
SCHEDULES = web.AppKey("schedules", object)
EVENTS = web.AppKey("events", object)
RELOAD = web.AppKey("reload", object)
CONFIG = web.AppKey("config", object)
SOURCES = web.AppKey("sources", object)
MAX_LIMIT = 1000


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer tokens when configured (compared in constant time); otherwise loopback clients only."""
    if not request.path.startswith("/v1/") and request.path != "/v1":
        return await handler(request)
    digests: tuple[bytes, ...] = request.app[TOKENS]
    if not digests:
        if not is_loopback(request.remote):
            return error(403, "the admin API answers only loopback clients when no admin.tokens are set")
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = _digest(token.strip()) if scheme.lower() == "bearer" else b""
    # Compare against every token, so that timing tells nothing about which (if any) matched.
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(offered, digest)
    if not matched:
        return json_response(
            {"error": "a valid admin token is required"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    return await handler(request)


def add_admin_routes(
    app: web.Application,
    dispatcher: Dispatcher,
    tokens: tuple[str, ...],
    schedules: ScheduleState | None = None,
    events: EventBus | None = None,
    reload: Callable[[str], Awaitable[Any]] | None = None,
    config: Callable[[], dict[str, Any]] | None = None,
    sources: Callable[[], list[dict[str, Any]]] | None = None,
) -> None:
    app[DISPATCHER] = dispatcher
    app[SOURCES] = sources or list
    app[EVENTS] = events
    app[RELOAD] = reload
    app[CONFIG] = config
    app[SCHEDULES] = schedules or (lambda trigger_id: None)
    app[TOKENS] = tuple(_digest(t) for t in tokens)
    app.middlewares.append(admin_auth)
    app.router.add_get("/v1/triggers", list_triggers)
    app.router.add_get("/v1/triggers/{trigger_id}", get_trigger)
    app.router.add_post("/v1/triggers/{trigger_id}/fire", fire)
    app.router.add_post("/v1/triggers/{trigger_id}/pause", pause)
    app.router.add_post("/v1/triggers/{trigger_id}/resume", resume)
    app.router.add_get("/v1/triggers/{trigger_id}/executions", list_trigger_runs)
    app.router.add_get("/v1/triggers/{trigger_id}/executions/{run_id}", get_run)
    app.router.add_post("/v1/triggers/{trigger_id}/executions/{run_id}/cancel", cancel_run)
    app.router.add_get("/v1/runs", list_runs)
    app.router.add_get("/v1/runs/{run_id}", get_run)
    app.router.add_post("/v1/runs/{run_id}/cancel", cancel_run)
    app.router.add_post("/v1/runs/{run_id}/replay", replay_run)
    app.router.add_get("/v1/dead-letters", dead_letters)
    app.router.add_post("/v1/events", post_events)
    app.router.add_post("/v1/reload", post_reload)
    app.router.add_get("/v1/config", get_config)
    app.router.add_get("/v1/sources", get_sources)
    app.router.add_get("/v1/instances", list_instances)
    app.router.add_get("/v1/openapi.json", get_openapi)


# --- describing triggers (never a secret) ----------------------------------------


def describe_trigger(
    trigger: Trigger, stats: TriggerStats | None, schedule: dict[str, Any] | None, paused_at: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": trigger.id,
        "name": trigger.name,
        "description": trigger.description,
        "type": str(trigger.type),
        "enabled": trigger.enabled,
        "paused": paused_at is not None,
        "paused_at": paused_at,
        "agent_id": trigger.agent.id,
        "source_file": str(trigger.origin),
        "max_concurrent": trigger.max_concurrent,
        "overlap": str(trigger.overlap),
        "timeout_seconds": trigger.timeout_seconds,
        "max_attempts": trigger.retry.max_attempts,
    }
    if trigger.schedule is not None:
        body["schedule"] = {
            "cron": trigger.schedule.cron,
            "timezone": trigger.schedule.timezone,
            "jitter_seconds": trigger.schedule.jitter_seconds,
            **(schedule or {"next_nominal": None, "next_fire_at": None, "last_slot": None}),
        }
    if trigger.webhook is not None:
        auth = trigger.webhook.authentication
        body["webhook"] = {
            "method": trigger.webhook.method,
            "endpoint": trigger.webhook.endpoint,
            "authentication": str(auth.type) if auth else None,
        }
    if trigger.event is not None:
        body["event"] = {
            "pattern": trigger.event.pattern,
            "source": list(trigger.event.sources),
            "count_threshold": trigger.event.count_threshold,
            "window_seconds": trigger.event.window,
        }
    body["flow"] = describe_flow(trigger)
    last = stats.last_run if stats else None
    body["state"] = {
        "runs": dict(stats.runs) if stats else {},
        "last_run": {"id": last.id, "status": str(last.status), "created_at": last.created_at} if last else None,
    }
    return body


def describe_flow(trigger: Trigger) -> dict[str, Any]:
    """A trigger's flow control (SPEC 12) as configured; JSONPaths as written."""
    debounce, throttle, budget = trigger.debounce, trigger.throttle, trigger.budget
    return {
        "concurrency_key": trigger.concurrency_key.text if trigger.concurrency_key else None,
        "debounce": {"period_seconds": debounce.period, "key": debounce.key.text if debounce.key else None}
        if debounce
        else None,
        "throttle": {
            "limit": throttle.limit,
            "per_seconds": throttle.per,
            "key": throttle.key.text if throttle.key else None,
        }
        if throttle
        else None,
        "budget": {"tokens_per_day": budget.tokens_per_day, "runs_per_hour": budget.runs_per_hour} if budget else None,
    }


def _configuration(request: web.Request) -> Configuration:
    return request.app[DISPATCHER].configuration


def _trigger(request: web.Request) -> Trigger:
    trigger = _configuration(request).triggers.get(request.match_info["trigger_id"])
    if trigger is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no trigger '{request.match_info['trigger_id']}'"}),
            content_type="application/json",
        )
    return trigger


async def list_triggers(request: web.Request) -> web.Response:
    stats = await _store_call(request.app[DISPATCHER].store.trigger_stats())
    triggers = sorted(_configuration(request).triggers.values(), key=lambda t: t.id)
    schedules: Any = request.app[SCHEDULES]
    paused = request.app[DISPATCHER].flow.paused
    return json_response(
        {"triggers": [describe_trigger(t, stats.get(t.id), schedules(t.id), paused.get(t.id)) for t in triggers]}
    )


async def get_trigger(request: web.Request) -> web.Response:
    trigger = _trigger(request)
    dispatcher = request.app[DISPATCHER]
    stats = await _store_call(dispatcher.store.trigger_stats())
    schedules: Any = request.app[SCHEDULES]
    body = describe_trigger(
        trigger, stats.get(trigger.id), schedules(trigger.id), dispatcher.flow.paused.get(trigger.id)
    )
    spent = await _store_call(dispatcher.flow.spend(trigger, dispatcher.configuration.agents.get(trigger.agent.id)))
    body["spend"] = {scope: spend.to_json() for scope, spend in spent.items()}
    # `triggerd test` asks for the groups a sample firing falls in: ?concurrency_key=1&throttle_key=...
    wanted = {kind: request.query[f"{kind}_key"] for kind in GROUP_KINDS if f"{kind}_key" in request.query}
    if wanted:
        body["groups"] = await _store_call(dispatcher.flow.groups(trigger, wanted))
    return json_response(body)


async def pause(request: web.Request) -> web.Response:
    """POST /v1/triggers/{id}/pause (SPEC 12): stored, so every daemon and every restart keeps it."""
    trigger = _trigger(request)
    paused_at = await _store_call(request.app[DISPATCHER].flow.pause(trigger.id))
    log.info("trigger paused", extra={"trigger_id": trigger.id})
    return json_response({"trigger_id": trigger.id, "paused": True, "paused_at": paused_at})


async def resume(request: web.Request) -> web.Response:
    trigger = _trigger(request)
    resumed = await _store_call(request.app[DISPATCHER].flow.resume(trigger.id))
    if resumed:
        log.info("trigger resumed", extra={"trigger_id": trigger.id})
    return json_response({"trigger_id": trigger.id, "paused": False, "paused_at": None})


# --- runs -------------------------------------------------------------------------


async def _store_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except StoreError as exc:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": f"store unavailable: {exc}"}), content_type="application/json"
        ) from None


def _page(request: web.Request) -> tuple[RunStatus | None, int, str | None]:
    query = request.query
    status: RunStatus | None = None
    if query.get("status"):
        try:
            status = RunStatus(query["status"])
        except ValueError:
            raise _bad_request(f"unknown status {query['status']!r}; one of {', '.join(RunStatus)}") from None
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise _bad_request("limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad_request(f"limit must be between 1 and {MAX_LIMIT}")
    return status, limit, query.get("before") or None


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _runs_page(runs: list[Run], limit: int) -> dict[str, Any]:
    return {"runs": [r.to_json() for r in runs], "next_before": runs[-1].id if len(runs) == limit else None}


async def list_runs(request: web.Request) -> web.Response:
    status, limit, before = _page(request)
    store = request.app[DISPATCHER].store
    runs = await _store_call(
        store.list_runs(trigger_id=request.query.get("trigger") or None, status=status, limit=limit, before=before)
    )
    return json_response(_runs_page(runs, limit))


async def list_trigger_runs(request: web.Request) -> web.Response:
    trigger_id = request.match_info["trigger_id"]
    status, limit, before = _page(request)
    store = request.app[DISPATCHER].store
    runs = await _store_call(store.list_runs(trigger_id=trigger_id, status=status, limit=limit, before=before))
    if not runs and trigger_id not in _configuration(request).triggers:
        return error(404, f"no trigger '{trigger_id}'")
    return json_response(_runs_page(runs, limit))


async def _run_or_404(request: web.Request) -> Run:
    run_id = request.match_info["run_id"]
    run: Run | None = await _store_call(request.app[DISPATCHER].store.get_run(run_id))
    trigger_id = request.match_info.get("trigger_id")
    if run is None or (trigger_id is not None and run.trigger_id != trigger_id):
        raise web.HTTPNotFound(text=json.dumps({"error": f"no run '{run_id}'"}), content_type="application/json")
    return run


async def get_run(request: web.Request) -> web.Response:
    return json_response((await _run_or_404(request)).to_json())


async def cancel_run(request: web.Request) -> web.Response:
    run = await _run_or_404(request)
    try:
        cancelled = await request.app[DISPATCHER].cancel(run.id)
    except Conflict as exc:
        return error(409, str(exc), run_status=str(run.status))
    except StoreError as exc:
        return error(503, f"store unavailable: {exc}")
    return json_response(cancelled.to_json())


def _accepted(submitted: Submitted, **extra: Any) -> web.Response:
    status = str(submitted.status) if submitted.status else None
    return json_response(
        {"run_id": submitted.run_id, "trigger_id": submitted.trigger_id, "status": status, **extra},
        status=202,
    )


async def replay_run(request: web.Request) -> web.Response:
    run = await _run_or_404(request)
    try:
        submitted = await request.app[DISPATCHER].replay(run.id)
    except Conflict as exc:
        return error(409, str(exc), run_status=str(run.status))
    except NotFound as exc:
        return error(409, str(exc))
    except (Unavailable, StoreError) as exc:
        return error(503, str(exc))
    return _accepted(submitted, replay_of=run.id)


async def fire(request: web.Request) -> web.Response:
    trigger = _trigger(request)
    input_: Any = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json parses
            return error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, 'the body must be a JSON object like {"input": {...}}')
        input_ = body.get("input", {})
        if not isinstance(input_, dict):
            return error(400, "input must be a JSON object")
    try:
        submitted = await request.app[DISPATCHER].fire(trigger.id, input_)
    except NotFound as exc:
        return error(409, str(exc))
    except (Unavailable, StoreError) as exc:
        return error(503, str(exc))
    return _accepted(submitted)


async def dead_letters(request: web.Request) -> web.Response:
    _, limit, _ = _page(request)
    store = request.app[DISPATCHER].store
    runs = await _store_call(store.dead_letters(limit))
    messages = await _store_call(store.dead_messages(limit))
    return json_response({"runs": [r.to_json() for r in runs], "messages": [m.to_json() for m in messages]})


async def get_sources(request: web.Request) -> web.Response:
    """SPEC 5.4: each source's state, messages by outcome, in flight and lag."""
    sources: Any = request.app[SOURCES]
    return json_response({"sources": sources()})


async def list_instances(request: web.Request) -> web.Response:
    """SPEC 10: the daemons sharing the store, with when each started and was last seen."""
    instances = await _store_call(request.app[DISPATCHER].store.instances())
    return json_response({"instances": [i.to_json() for i in instances]})


async def post_events(request: web.Request) -> web.Response:
    """SPEC 5.3: one event or a list, or CloudEvents in any HTTP mode; 202 once the events and the
    runs they cause are committed."""
    bus = request.app[EVENTS]
    if not isinstance(bus, EventBus):
        return error(503, "the event bus is not running")
    body = await request.read()
    try:
        events = events_from_http(request.headers.get("Content-Type"), request.headers.items(), body, bus.clock.now())
        published = await bus.publish(events)
    except BadEvent as exc:
        return error(400, str(exc))
    except (Unavailable, StoreError) as exc:
        return error(503, str(exc))
    return json_response(published.to_json(), status=202)


async def post_reload(request: web.Request) -> web.Response:
    """SPEC 8: reload now; 200 when the new configuration is live, 422 with the problems when it was rejected."""
    reload: Any = request.app[RELOAD]
    if reload is None:
        return error(503, "reload is not available")
    outcome = await reload("POST /v1/reload")
    if outcome.applied:
        return json_response({"status": "reloaded"})
    return json_response({"status": "rejected", "problems": outcome.problems}, status=422)


async def get_config(request: web.Request) -> web.Response:
    """SPEC 7.2/8: the running configuration's files, the problems of what it left out, when it was applied."""
    config: Any = request.app[CONFIG]
    if config is None:
        return error(503, "the configuration is not available")
    return json_response(config())


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi())
