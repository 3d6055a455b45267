"""The operator console at /ui/ (SPEC 13; docs/console.md): pages rendered on the server, one
stylesheet and one script, served by the admin listener under the admin API's access rule."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from triggerd.console import access, actions, live, pages

STATIC_DIR = Path(__file__).parent / "static"


async def _home(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/ui/")


def add_console(app: web.Application) -> None:
    """Mount the console on an app that add_admin_routes set up (it reads the same app keys)."""
    app[access.SESSIONS] = access.Sessions()
    app[access.SIGN_IN_LIMIT] = access.SignInLimit()
    live.install(app)
    app.middlewares.append(access.console_guard)
    app.router.add_get("/ui", _home)
    app.router.add_get("/ui/", pages.overview)
    app.router.add_get("/ui/triggers", pages.triggers)
    app.router.add_get("/ui/runs", pages.runs)
    app.router.add_get("/ui/runs/{run_id}", pages.run_detail)
    app.router.add_get("/ui/dead-letters", pages.dead_letters)
    app.router.add_get("/ui/sources", pages.sources)
    app.router.add_get("/ui/events", live.events)
    app.router.add_get(access.SIGN_IN, actions.sign_in_form)
    app.router.add_post(access.SIGN_IN, actions.sign_in)
    app.router.add_post("/ui/sign-out", actions.sign_out)
    app.router.add_post("/ui/api/{path:.+}", actions.forward)
    app.router.add_static(access.STATIC, STATIC_DIR)
