"""What the console changes: sign-in and sign-out, and every action forwarded to the /v1 handler
that does it, so that the console and the API fire, cancel, replay, pause and resume the same way.

The console's script POSTs to /ui/api/<path> with the CSRF token; the access middleware has
checked the session and the token by then, and the request is handed to the handler /v1/<path>
resolves to (its answer, JSON, goes back unchanged). An action the API does not have is a 404.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from triggerd.console.access import (
    COOKIE,
    SESSION,
    SESSIONS,
    SIGN_IN,
    SIGN_IN_LIMIT,
    Session,
    read_form,
    set_cookie,
    token_matches,
)
from triggerd.console.render import esc, page
from triggerd.http.responses import error


async def forward(request: web.Request) -> web.StreamResponse:
    """POST /ui/api/{path}: the /v1/{path} handler's answer."""
    target = request.clone(rel_url=request.rel_url.with_path("/v1/" + request.match_info["path"]))
    match = await request.app.router.resolve(target)
    # "/v1/" + path is normalised ("..") before routing: only an admin API route may answer.
    refused = match.http_exception
    if refused is not None or not target.path.startswith("/v1/"):
        return error(refused.status if refused else 404, f"the admin API has no POST {target.path}")
    match.add_app(request.app)
    match.freeze()
    target._match_info = match  # what aiohttp sets when it routes a request itself
    return await match.handler(target)


def _sign_in_page(message: str = "", next_path: str = "/ui/") -> str:
    note = f'<p class="notice bad" role="alert">{esc(message)}</p>' if message else ""
    form = (
        f'<form method="post" action="{SIGN_IN}" class="card sign-in">{note}'
        '<label>Admin token<input type="password" name="token" autocomplete="current-password" required autofocus>'
        f'</label><input type="hidden" name="next" value="{esc(next_path)}"><button type="submit">Sign in</button>'
        '<p class="muted">One of the daemon\'s <span class="mono">admin.tokens</span>.</p></form>'
    )
    return page("Sign in", "", form, "")


def _next(value: str) -> str:
    """Only a console path: the sign-in never sends a browser elsewhere."""
    try:
        parts = urlsplit(value)
    except ValueError:  # "http://[" is no path of ours
        return "/ui/"
    ok = not parts.scheme and not parts.netloc and parts.path.startswith("/ui/") and "\\" not in value
    ok = ok and value.isascii() and value.isprintable()  # it becomes a Location header: no CR, LF or NUL
    return value if ok else "/ui/"


async def sign_in_form(request: web.Request) -> web.Response:
    return web.Response(
        text=_sign_in_page(next_path=_next(request.query.get("next", "/ui/"))), content_type="text/html"
    )


async def sign_in(request: web.Request) -> web.Response:
    form = await read_form(request)
    next_path = _next(form.get("next", "/ui/"))
    limit, address = request.app[SIGN_IN_LIMIT], request.remote or ""
    wait = limit.wait(address)
    if wait:
        text = _sign_in_page(f"Too many wrong tokens from this address: try again in {wait} s.", next_path)
        return web.Response(status=429, text=text, content_type="text/html", headers={"Retry-After": str(wait)})
    if not token_matches(request, form.get("token", "")):
        limit.failed(address)
        text = _sign_in_page("That token is not one of the admin tokens.", next_path)
        return web.Response(status=401, text=text, content_type="text/html")
    response = web.Response(status=303, headers={"Location": next_path})
    set_cookie(request, response, request.app[SESSIONS].create())
    return response


async def sign_out(request: web.Request) -> web.Response:
    session: Session = request[SESSION]
    request.app[SESSIONS].drop(session.id)
    response = web.Response(status=303, headers={"Location": SIGN_IN})
    response.del_cookie(COOKIE, path="/ui/")
    return response
