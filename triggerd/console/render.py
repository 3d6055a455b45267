"""HTML for the console: the page layout and the small pieces every page uses.

Everything that comes from a run, a trigger or a source passes through `esc`, which masks the
registered secrets (triggerd.masking, as every /v1 answer does) before escaping for HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from triggerd.masking import dumps, mask
from triggerd.runs import Run

NAV = (
    ("overview", "/ui/", "Overview"),
    ("triggers", "/ui/triggers", "Triggers"),
    ("runs", "/ui/runs", "Runs"),
    ("dead-letters", "/ui/dead-letters", "Dead letters"),
    ("sources", "/ui/sources", "Sources"),
)
FOLD_LINES = 20  # longer JSON or text is folded behind a <details>
FOLD_CHARS = 2000


def esc(value: Any) -> str:
    """Text for HTML: secrets masked, then escaped (attributes too)."""
    return html.escape(mask("" if value is None else str(value)), quote=True)


def page(title: str, active: str, body: str, csrf: str, *, signed_in: bool = False, live: str = "") -> str:
    """A whole page: the navigation, the CSRF token for the script, the body."""
    links = (
        ""
        if not active
        else "".join(
            f'<a href="{href}"{" aria-current=page" if key == active else ""}>{label}</a>' for key, href, label in NAV
        )
    )
    sign_out = (
        f'<form method="post" action="/ui/sign-out" class="sign-out"><input type="hidden" name="csrf" '
        f'value="{esc(csrf)}"><button type="submit" class="quiet">Sign out</button></form>'
        if signed_in
        else ""
    )
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · triggerd</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{esc(csrf)}">'
        '<link rel="stylesheet" href="/ui/static/console.css">'
        '<script src="/ui/static/console.js" defer></script></head>'
        f'<body data-live="{esc(live)}"><header><a class="brand" href="/ui/">triggerd</a><nav>{links}</nav>{sign_out}'
        f'</header><main><h1>{esc(title)}</h1><p id="notice" class="notice" role="status" hidden></p>{body}</main>'
        "</body></html>\n"
    )


def when(instant: str | None, empty: str = "—") -> str:
    """An instant: the script shows it in the browser's zone, with UTC on hover."""
    if not instant:
        return f'<span class="muted">{empty}</span>'
    return f'<time datetime="{esc(instant)}" title="{esc(instant)} UTC">{esc(instant)}</time>'


def badge(status: str | None, text: str | None = None) -> str:
    status = status or "none"
    return f'<span class="badge s-{esc(status)}">{esc(text or status)}</span>'


def json_block(value: Any) -> str:
    """Pretty JSON (masked); folded when long."""
    if value is None:
        return '<span class="muted">—</span>'
    text = value if isinstance(value, str) else dumps(value, indent=2)
    return fold(text)


def fold(text: str, css: str = "") -> str:
    """Text in a <pre> (of class `css`), behind a <details> past FOLD_LINES or FOLD_CHARS."""
    block = f'<pre class="{css}">{esc(text)}</pre>' if css else f"<pre>{esc(text)}</pre>"
    lines = text.rstrip("\n").count("\n") + 1  # a last newline ends a line, it does not start one
    if lines <= FOLD_LINES and len(text) <= FOLD_CHARS:
        return block
    return f"<details class=fold><summary>{lines} lines, {len(text)} characters: show</summary>{block}</details>"


def table(headings: Iterable[str], rows: Iterable[str], empty: str, *, body_id: str = "") -> str:
    rows = list(rows)
    head = "".join(f"<th>{esc(h)}</th>" for h in headings)
    tbody_id = f' id="{body_id}"' if body_id else ""
    note = "" if rows else f'<p class="empty">{esc(empty)}</p>'
    body = f"<tbody{tbody_id}>{''.join(rows)}</tbody>"
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead>{body}</table></div>{note}'


def card(title: str, content: str, extra: str = "") -> str:
    return f'<section class="card {extra}"><h2>{esc(title)}</h2>{content}</section>'


def dl(items: Mapping[str, str]) -> str:
    """A definition list; values are HTML already."""
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def run_link(run_id: str) -> str:
    return f'<a class="mono" href="/ui/runs/{esc(run_id)}">{esc(run_id[-8:])}</a>'


def run_row(run: Run) -> str:
    """One run in a list; the same HTML the live stream sends when a run appears or changes."""
    reason = f' <span class="muted">({esc(run.reason)})</span>' if run.reason else ""
    return (
        f'<tr id="run-{esc(run.id)}" data-id="{esc(run.id)}" data-status="{esc(run.status)}">'
        f'<td><a class="mono" href="/ui/runs/{esc(run.id)}" title="{esc(run.id)}">{esc(run.id[-8:])}</a></td>'
        f'<td><a href="/ui/runs?trigger={esc(run.trigger_id)}">{esc(run.trigger_id)}</a></td>'
        f"<td>{badge(str(run.status))}{reason}</td><td>{esc(run.source)}</td>"
        f"<td>{len(run.attempts)}</td><td>{when(run.created_at)}</td><td>{when(run.finished_at)}</td></tr>"
    )


def progress(run: Run) -> str:
    """How far a run's tool calls are, started/finished: its detail page reloads when it changes."""
    steps = run.steps
    return f"{len(steps)}/{sum(1 for step in steps if 'finished_at' in step)}"


RUN_HEADINGS = ("Run", "Trigger", "Status", "Source", "Attempts", "Created", "Finished")


def button(label: str, post: str, *, body: str = "", confirm: str = "", kind: str = "", done: str = "") -> str:
    """A button the script turns into a POST to /ui/api/... with the CSRF token; `done` is the
    notice it shows once the action is taken (then the page reloads)."""
    extra = f' data-body="{esc(body)}"' if body else ""
    extra += f' data-confirm="{esc(confirm)}"' if confirm else ""
    extra += f' data-done="{esc(done)}"' if done else ""
    return f'<button type="button" class="{kind}" data-post="{esc(post)}"{extra}>{esc(label)}</button>'
