"""Webhook routes (SPEC 3.2, 7.1): every request answered from the table, never a 500.

Routes are not aiohttp routes: one catch-all looks the path up in a WebhookRoutes
table, so a new configuration swaps the whole table at once (hot reload) without
touching the running server. A request goes through, in order: draining, route and
method, client address, body size, authentication (on the raw bytes), rate limit,
body parsing, event age, filter, input mapping, idempotency, and the commit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from triggerd.clock import Clock, isoformat
from triggerd.conditions import Scope, evaluate
from triggerd.config.models import Configuration, Settings, Trigger
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.errors import AuthFailure, MissingInput, NotFound, PathTooBroad, StoreError, Unavailable
from triggerd.http.auth import Verified, Verifier
from triggerd.http.limits import TokenBucket, allowed, client_address
from triggerd.http.responses import error, json_response
from triggerd.mapping import build_input
from triggerd.metrics import METRICS, labelled
from triggerd.runs import Firing, RunStatus, Source
from triggerd.sources.webhook import BadBody, idempotency_key, parse_body, too_old, webhook_context

log = logging.getLogger("triggerd.webhook")
# The catch-all leaves triggerd's own paths to their routes (so they keep their 404/405 answers).
CATCH_ALL = r"/{path:(?!v1/|v1$|healthz$|readyz$|metrics$).*}"
PAUSED_RETRY_AFTER = 60  # seconds a paused trigger asks senders to wait before retrying (docs/flow-control.md)


def normalize(path: str) -> str:
    return path.rstrip("/") or "/"


@dataclass(eq=False)
class Route:
    trigger: Trigger
    verifier: Verifier | None
    bucket: TokenBucket | None


class WebhookRoutes:
    """The route table of one configuration: path -> method -> route."""

    def __init__(self, configuration: Configuration, now: float, previous: WebhookRoutes | None = None) -> None:
        self.table: dict[str, dict[str, Route]] = {}
        kept = {
            r.trigger.fingerprint: r.bucket for m in (previous.table.values() if previous else ()) for r in m.values()
        }
        for trigger in configuration.triggers.values():
            webhook = trigger.webhook
            if webhook is None or not trigger.enabled:
                continue
            verifier = Verifier(webhook.authentication) if webhook.authentication else None
            # An unchanged trigger keeps its rate-limit bucket across a reload.
            bucket = kept.get(trigger.fingerprint) or (
                TokenBucket(webhook.rate_limit, now) if webhook.rate_limit else None
            )
            self.table.setdefault(normalize(webhook.endpoint), {})[webhook.method] = Route(trigger, verifier, bucket)


class _Answer(Exception):
    """A finished answer, raised from deep in the pipeline."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


def _fail(status: int, message: str, **fields: Any) -> _Answer:
    return _Answer(error(status, message, **fields))


class WebhookHandler:
    def __init__(self, dispatcher: Dispatcher, settings: Settings, clock: Clock, accepting: Callable[[], bool]) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self.accepting = accepting
        self.routes = WebhookRoutes(dispatcher.configuration, clock.monotonic())

    def reconfigure(self, configuration: Configuration) -> None:
        """Swap the whole route table at once: a request sees the old table or the new, never a mix."""
        self.routes = WebhookRoutes(configuration, self.clock.monotonic(), self.routes)

    def mount(self, app: web.Application) -> None:
        app.router.add_route("*", CATCH_ALL, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            response = await self._handle(request)
        except _Answer as answer:
            response = answer.response
        methods = self.routes.table.get(normalize(request.path), {})
        route = methods.get(request.method)
        labelled(METRICS.webhook_responses, route.trigger.id if route else "-", str(response.status)).inc()
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        if not self.accepting():
            raise _fail(503, "triggerd is shutting down")
        methods = self.routes.table.get(normalize(request.path))
        if methods is None:
            raise _fail(404, f"no webhook at {request.path}")
        route = methods.get(request.method)
        if route is None:
            raise _Answer(
                web.json_response(
                    {"error": f"{request.method} is not accepted at {request.path}"},
                    status=405,
                    headers={"Allow": ", ".join(sorted(methods))},
                )
            )
        trigger = route.trigger
        webhook = trigger.webhook
        assert webhook is not None
        extra = {"trigger_id": trigger.id, "remote_addr": request.remote}
        if webhook.ip_allowlist:
            address = client_address(
                request.remote, request.headers.get("X-Forwarded-For"), self.settings.server.trusted_proxies
            )
            if not allowed(address, webhook.ip_allowlist):
                log.warning("webhook refused: address %s not allowed", address, extra=extra)
                raise _fail(403, "address not allowed")
        body = await self._read_body(request, webhook.max_body_bytes or self.settings.server.max_body_bytes)
        verified = Verified()
        if route.verifier is not None:
            try:
                verified = route.verifier.verify(request.headers, body, self.clock.now())
            except AuthFailure as exc:
                log.warning("webhook authentication failed: %s", exc, extra=extra)
                METRICS.auth_failures.labels(trigger.id).inc()
                raise _fail(401, "authentication failed") from None
        # Counted only now (SPEC 7.1): unsigned traffic must not spend a real sender's tokens.
        if route.bucket is not None:
            wait = route.bucket.take(self.clock.monotonic())
            if wait > 0:
                raise _Answer(
                    web.json_response(
                        {"error": "rate limited", "trigger_id": trigger.id},
                        status=429,
                        headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    )
                )
        if trigger.id in self.dispatcher.flow.paused:  # SPEC 12, once the sender is known: it retries later
            raise _Answer(
                web.json_response(
                    {"error": "trigger paused", "trigger_id": trigger.id},
                    status=503,
                    headers={"Retry-After": str(PAUSED_RETRY_AFTER)},
                )
            )
        try:
            parsed = parse_body(request.content_type, body)
        except BadBody as exc:
            raise _fail(400, str(exc)) from None
        context = webhook_context(
            trigger,
            method=request.method,
            path=request.path,
            headers=request.headers.items(),
            query=request.query.items(),
            body=parsed,
            remote_addr=request.remote,
            received_at=isoformat(self.clock.now()),
        )
        if too_old(trigger, verified, self.clock.now()):
            raise _Answer(json_response({"status": "dropped", "reason": "max_event_age", "trigger_id": trigger.id}))
        try:
            if webhook.filter is not None and not evaluate(webhook.filter, context, Scope.WEBHOOK):
                raise _Answer(json_response({"status": "filtered", "trigger_id": trigger.id}))
            run_input = build_input(trigger.agent.input, trigger.agent.input_mapping, context)
            key = idempotency_key(trigger, context, verified)
        except (MissingInput, PathTooBroad) as exc:  # PathTooBroad: a JSONPath past its node bound (SPEC 4)
            raise _fail(422, str(exc), path=exc.path) from None
        firing = Firing(
            trigger.id,
            trigger.agent.id,
            run_input,
            Source.WEBHOOK,
            idempotency_key=key,
            dedupe_seconds=trigger.dedupe_window if key is not None else 0.0,
            context=context,
        )
        try:
            submitted = await self.dispatcher.submit(firing)
        except (Unavailable, StoreError, NotFound) as exc:
            log.error("webhook not accepted: %s", exc, extra=extra)
            raise _Answer(
                web.json_response({"error": "temporarily unavailable"}, status=503, headers={"Retry-After": "5"})
            ) from None
        if submitted.duplicate:
            return json_response({"run_id": submitted.run_id, "trigger_id": trigger.id, "duplicate": True})
        if submitted.status is RunStatus.PENDING and webhook.response is not None:
            return _static(webhook.response.status, webhook.response.body, webhook.response.headers)
        return json_response(
            {"run_id": submitted.run_id, "trigger_id": trigger.id, "status": str(submitted.status)}, status=202
        )

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        """The raw body, refused with 413 as soon as it is known to be larger than the limit."""
        if request.content_length is not None and request.content_length > limit:
            raise _fail(413, f"body larger than {limit} bytes")
        body = bytearray()
        while chunk := await request.content.read(65536):
            body += chunk
            if len(body) > limit:
                raise _fail(413, f"body larger than {limit} bytes")
        return bytes(body)


def _static(status: int, body: Any, headers: Any) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=dict(headers))
    if isinstance(body, str):
        return web.Response(status=status, text=body, headers=dict(headers))
    return web.json_response(body, status=status, headers=dict(headers))
