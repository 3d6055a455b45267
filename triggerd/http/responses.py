"""JSON answers, and the middleware that turns any unexpected error into a 503, never a 500."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from triggerd.masking import dumps, mask

log = logging.getLogger("triggerd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer; every answer is built here, so this is where substituted secrets are masked (SPEC 2.3)."""
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


def error(status: int, message: str, **fields: Any) -> web.Response:
    return json_response({"error": message, **fields}, status=status)


@web.middleware
async def never_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SPEC 7.1: an internal error is logged with a correlation id and answered 503."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 500:
            return _internal(request, exc)
        if exc.content_type == "application/json" or exc.status < 400:
            if exc.text:
                exc.text = mask(exc.text)  # an error message may quote a secret too (SPEC 2.3)
            raise
        # aiohttp's own refusals (no route, wrong method, body too large) are plain text: answer JSON.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")}
        return json_response({"error": exc.reason}, status=exc.status, headers=headers)
    except RequestPayloadError as exc:
        # aiohttp could not decode the body (Content-Encoding, chunks): the client's bytes, a 400.
        return error(400, f"the body could not be read: {exc}")
    except ConnectionResetError as exc:
        if request.transport is None or request.transport.is_closing():
            # The client left, or was closed for being slow (read_timeout): nobody to answer.
            return error(400, "the connection was closed before the request was read")
        return _internal(request, exc)
    except Exception as exc:
        return _internal(request, exc)
    return response


def _internal(request: web.Request, exc: BaseException) -> web.Response:
    correlation = secrets.token_hex(8)
    log.error(
        "internal error on %s %s",
        request.method,
        request.path,
        exc_info=exc,
        extra={"correlation_id": correlation},
    )
    return error(503, "temporarily unavailable", correlation_id=correlation)
