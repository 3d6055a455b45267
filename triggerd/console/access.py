"""Who may use the console (SPEC 13): the admin API's rule, with a session in place of the bearer token.

- No admin tokens configured: loopback clients only, as for /v1; each browser still gets a
  session, because the session holds its CSRF token.
- Tokens configured: a sign-in page takes an admin token and sets a session cookie. The cookie
  holds a random session id that maps to the session here, never the token; it is `HttpOnly`
  (page scripts cannot read it), `SameSite=Strict` (other sites' requests never carry it) and
  expires after SESSION_SECONDS.
- Every state-changing request (POST) carries the session's CSRF token, in the `X-CSRF-Token`
  header (the console's script) or a `csrf` form field (the sign-out form); without it: 403.
  A POST whose Origin names another site is refused too, sign-in included.
- Every answer under /ui/ carries a strict Content-Security-Policy (scripts and styles only from
  the console's own files, no inline code, no framing) and the headers that go with it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from triggerd.errors import StoreError
from triggerd.http.admin import TOKENS, is_loopback
from triggerd.http.responses import Handler

COOKIE = "triggerd_console"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000  # the oldest is dropped beyond it: a bound on memory, whoever signs in
CSRF_HEADER = "X-CSRF-Token"
SIGN_IN = "/ui/sign-in"
STATIC = "/ui/static/"
log = logging.getLogger("triggerd.console")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: under it Chromium sends `Origin: null` on our own forms
}


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    expires: float  # time.monotonic()


class Sessions:
    """The signed-in browsers of this daemon, in memory: a restart signs everyone out."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + SESSION_SECONDS)
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        if session.expires <= time.monotonic():
            del self._sessions[session.id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


class SignInLimit:
    """Wrong tokens per client address: past FAILURES in WINDOW seconds, sign-in refuses that address
    (whatever it offers, else a right guess would still show) until the window ends.

    A token is long and random, so this is not what keeps it secret; it keeps a weak one from
    being guessed at line speed, and says in the log that someone is trying.
    """

    FAILURES = 10
    WINDOW = 60.0
    ADDRESSES = 10_000  # the oldest is forgotten beyond it: a bound on memory, whoever knocks

    def __init__(self) -> None:
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address: (window start, count)

    def wait(self, address: str) -> int:
        """Seconds until this address may try again; 0 when it may now."""
        start, count = self._failures.get(address, (0.0, 0))
        left = start + self.WINDOW - time.monotonic()
        return math.ceil(left) if count >= self.FAILURES and left > 0 else 0

    def failed(self, address: str) -> None:
        now = time.monotonic()
        start, count = self._failures.pop(address, (now, 0))
        if now - start >= self.WINDOW:
            start, count = now, 0
        self._failures[address] = (start, count + 1)
        if count + 1 == self.FAILURES:
            log.warning(
                "console sign-in: %d wrong tokens from %s; refused for %d s", self.FAILURES, address, self.wait(address)
            )
        while len(self._failures) > self.ADDRESSES:
            self._failures.popitem(last=False)


SESSIONS = web.AppKey("console_sessions", Sessions)
SIGN_IN_LIMIT = web.AppKey("console_sign_in_limit", SignInLimit)
SESSION = "console_session"  # request key: the request's Session


def token_matches(request: web.Request, offered: str) -> bool:
    """Constant time, every configured token compared (as admin_auth does for the bearer token)."""
    given = hashlib.sha256(offered.strip().encode()).digest()
    matched = False
    for digest in request.app[TOKENS]:
        matched |= hmac.compare_digest(given, digest)
    return matched and bool(offered.strip())


def set_cookie(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=SESSION_SECONDS,
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def _cross_site(request: web.Request) -> bool:
    """A browser says where a request comes from; anything but this origin is refused."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    try:
        return origin is not None and urlsplit(origin).netloc != request.host
    except ValueError:  # "http://[": no origin of ours
        return True


async def read_form(request: web.Request) -> dict[str, str]:
    """A posted form's text fields; one that cannot be read (bad encoding, charset, multipart) is a 400."""
    try:
        form = await request.post()
    except (ValueError, LookupError) as exc:  # UnicodeDecodeError is a ValueError; an unknown charset a LookupError
        raise web.HTTPBadRequest(text=f"the form cannot be read: {exc}") from None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(STATIC):
        return await handler(request)  # the console's own script and style: nothing secret
    open_access = not request.app[TOKENS]
    if open_access and not is_loopback(request.remote):
        return _refuse(403, "the console answers only loopback clients when no admin.tokens are set")
    if request.method == "POST" and _cross_site(request):
        return _refuse(403, "a request from another site is refused")
    session = request.app[SESSIONS].get(request.cookies.get(COOKIE))
    if request.path == SIGN_IN:
        if open_access:
            raise web.HTTPSeeOther("/ui/")
        return await handler(request)
    fresh = None
    if session is None:
        if not open_access:
            if request.method == "GET" and not request.path.startswith("/ui/events"):
                raise web.HTTPSeeOther(SIGN_IN)
            return _refuse(401, "sign in first")
        session = fresh = request.app[SESSIONS].create()
    if request.method == "POST" and not await _csrf_ok(request, session):
        return _refuse(403, "the CSRF token is missing or wrong; reload the page")
    request[SESSION] = session
    response = await handler(request)
    if fresh is not None:
        set_cookie(request, response, fresh)
    return response


async def _csrf_ok(request: web.Request, session: Session) -> bool:
    offered = request.headers.get(CSRF_HEADER)
    if offered is None and request.content_type == "application/x-www-form-urlencoded":
        offered = (await read_form(request)).get("csrf", "")
    return offered is not None and hmac.compare_digest(offered.encode(), session.csrf.encode())


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Access, CSRF and the security headers for everything under /ui/."""
    if not request.path.startswith("/ui/") and request.path != "/ui":
        return await handler(request)
    try:
        response = await _guarded(request, handler)
    except StoreError as exc:
        response = _refuse(503, f"the store is unavailable: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect
            exc.headers.update(HEADERS)
            raise
        # Answered here, as text with the headers below: never_500 would make it JSON without them.
        response = _refuse(exc.status, exc.text or exc.reason)
    response.headers.update(HEADERS)
    if not request.path.startswith(STATIC):
        response.headers["Cache-Control"] = "no-store"
    return response
