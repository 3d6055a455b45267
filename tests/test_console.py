"""The console (SPEC 13) driven in a real headless Chromium through Playwright, against the real daemon.

The browser starts once (for this module, the only one that drives it). Without Chromium or
Playwright these tests skip, as the server tests do, and fail instead where TRIGGERD_REQUIRE_SERVERS=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.fake_anthropic import FakeMessagesAPI, Reply
from tests.harness import FINAL, free_port, http, running_daemon, wait_for
from tests.servers import unavailable

CHROMIUM = os.environ.get("TRIGGERD_CHROMIUM", "/usr/bin/chromium")
TOKEN = "console-admin-token-value"
SECRET = "hook-secret-value-1234"
ENV = {"ADMIN_TOKEN": TOKEN, "HOOK_SECRET": SECRET}
DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
agent: {id: sleeper, type: command, command: [sleep, "30"]}
---
agent: {id: broken, type: command, command: [sh, -c, "echo boom >&2; exit 3"]}
---
trigger:
  id: echo
  type: event
  enabled: false
  event: {pattern: never}
  agent: {id: echo}
---
trigger:
  id: sleepy
  type: event
  enabled: false
  event: {pattern: never}
  agent: {id: sleeper}
---
trigger:
  id: broken
  type: event
  enabled: false
  event: {pattern: never}
  agent: {id: broken}
  retry: {max_attempts: 1}
---
trigger:
  id: hook
  type: webhook
  webhook:
    authentication: {type: bearer, secret: "${HOOK_SECRET}"}
  agent: {id: echo}
---
agent: {id: complainer, type: command, command: [sh, -c, "cat >&2; exit 3"]}
---
trigger:
  id: complaint
  type: webhook
  webhook:
    authentication: {type: bearer, secret: "${HOOK_SECRET}"}
  agent: {id: complainer}
  retry: {max_attempts: 1}
---
trigger:
  id: gate
  type: webhook
  webhook: {}
  agent: {id: echo}
  budget: {runs_per_hour: 1}
---
trigger:
  id: held
  type: event
  enabled: false
  event: {pattern: never}
  agent: {id: echo}
  concurrency_key: "$.event.data.pr"
  debounce: {period: "1h", key: "$.event.data.repo"}
  throttle: {limit: 5, per: "1m"}
"""

# An anthropic agent that acts (SPEC 5.1), against the fake Messages API: a tool whose output is
# its input (cat), one with 40 lines of output, one that fails, one that takes a while.
TOOLS = """\
---
agent:
  id: triage
  type: anthropic
  model: claude-test-1
  prompt: "Triage: {{{{ alert }}}}"
  api_key: test-key
  base_url: "{base_url}"
  tools:
    - agent: lookup
      description: "Look up one service"
      input_schema: {{type: object, properties: {{service: {{type: string}}}}, required: [service]}}
    - agent: history
      input_schema: {{type: object}}
    - agent: failing
      input_schema: {{type: object}}
    - agent: slow
      input_schema: {{type: object}}
---
agent: {{id: slow, type: command, command: [sh, -c, "sleep 1; cat"]}}
---
agent: {{id: lookup, type: command, command: [cat]}}
---
agent: {{id: history, type: command, command: [seq, "1", "40"]}}
---
agent: {{id: failing, type: command, command: [sh, -c, "echo disk full >&2; exit 3"]}}
---
trigger:
  id: triage
  type: event
  enabled: false
  event: {{pattern: never}}
  agent: {{id: triage}}
  retry: {{max_attempts: 1}}
"""


@pytest.fixture(scope="module")
def messages_api() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI([]) as api:
        yield api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, started once for the console tests.

    Module scope, not session: while Playwright's sync API is open it keeps its event loop set as
    the thread's running loop, and every later test that calls asyncio.run would fail. This is
    the one module that drives a browser, so it still starts once per test session.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, messages_api: FakeMessagesAPI) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("console")
    defs = DEFS + TOOLS.format(base_url=messages_api.base_url)
    with running_daemon(root, defs, 'admin:\n  tokens: ["${ADMIN_TOKEN}"]\n', env=ENV) as running:
        running.token = TOKEN
        yield running


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


def signed_in(context: Any, daemon: Any) -> Any:
    page = context.new_page()
    page.goto(daemon.url + "/ui/")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(daemon.url + "/ui/")
    return page


def test_sign_in_with_a_token_and_refused_with_a_wrong_one(context: Any, daemon: Any) -> None:
    page = context.new_page()
    page.goto(daemon.url + "/ui/runs")
    assert page.url == daemon.url + "/ui/sign-in"  # no session: the sign-in page, not the runs
    page.fill("input[name=token]", "not-the-token")
    with page.expect_response(daemon.url + "/ui/sign-in") as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401
    assert "not one of the admin tokens" in page.inner_text("main")
    assert context.cookies() == []
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(daemon.url + "/ui/")
    assert page.inner_text("h1") == "Overview"
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert TOKEN not in cookie["value"]  # a session id, never the token
    page.click("text=Sign out")
    page.wait_for_url(daemon.url + "/ui/sign-in")
    page.goto(daemon.url + "/ui/triggers")
    assert page.url == daemon.url + "/ui/sign-in"  # the session is gone with the sign-out


def test_a_fired_run_appears_live_turns_completed_and_opens(context: Any, daemon: Any) -> None:
    runs = signed_in(context, daemon)
    runs.goto(daemon.url + "/ui/runs")
    runs.wait_for_selector("#live-state:text('live')")
    runs.evaluate("window.notReloaded = true")
    triggers = context.new_page()
    triggers.goto(daemon.url + "/ui/triggers")
    triggers.fill("#echo textarea[name=input]", '{"greeting": "from the console"}')
    triggers.click("#echo button[type=submit]")
    link = triggers.wait_for_selector("#notice a")
    run_id = link.inner_text()
    row = f"#run-{run_id}"
    runs.wait_for_selector(f"{row}[data-status=completed]")  # appeared and changed without a reload
    assert runs.evaluate("window.notReloaded") is True
    assert daemon.run(run_id)["status"] == "completed"
    runs.click(f"{row} td:first-child a")
    runs.wait_for_url(f"{daemon.url}/ui/runs/{run_id}")
    text = runs.inner_text("main")
    assert '"greeting": "from the console"' in text  # input and output (cat) pretty-printed
    assert "Attempt 1" in text and "completed" in text
    title = runs.get_attribute(".timeline time", "title")
    assert title is not None and title.endswith("Z UTC")  # UTC on hover, the browser's zone shown


def test_a_tool_conversation_shows_as_a_timeline_of_its_steps(
    context: Any, daemon: Any, messages_api: FakeMessagesAPI
) -> None:
    messages_api.replies[:] = [
        Reply(text="Looking.", tool_uses=[("lookup", {"service": "web"}), ("history", {})]),
        Reply(text="Trying.", tool_uses=[("failing", {})], usage={"input_tokens": 30, "output_tokens": 7}),
        Reply(text='{"summary": "web is down; the disk is full"}'),
    ]
    run = daemon.wait_run(daemon.fire("triage", {"alert": "web 502"}))
    assert run["status"] == "completed" and len(run["steps"]) == 3
    page = signed_in(context, daemon)
    page.goto(f"{daemon.url}/ui/runs/{run['id']}")
    steps = page.locator("ol.steps > li")
    assert steps.count() == 3
    lookup, history, failing = (steps.nth(n) for n in range(3))
    assert re.match(r"Turn 1\s+lookup\s+completed", lookup.locator("h3.step-head").inner_text())
    assert '"service": "web"' in lookup.locator("pre").first.inner_text()  # the input, pretty JSON
    assert re.match(r"Turn 1\s+history", history.inner_text())
    folded = history.locator("details.fold")  # 40 lines of output, folded until asked for
    assert "40 lines" in folded.locator("summary").inner_text() and not folded.locator("pre").is_visible()
    folded.locator("summary").click()
    assert folded.locator("pre").inner_text().startswith("1\n2\n")
    assert re.match(r"Turn 2\s+failing\s+error", failing.locator("h3.step-head").inner_text())
    error = failing.locator("pre.err")
    assert "exit status 3: disk full" in error.inner_text()
    bad = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bad').trim()")
    assert error.evaluate("e => getComputedStyle(e).color") == _rgb(bad)  # in the error style
    assert failing.locator(".badge.s-failed").count() == 1
    started = failing.locator("time").first
    assert str(started.get_attribute("title")).endswith("Z UTC")  # UTC on hover
    assert started.inner_text() != started.get_attribute("datetime")  # shown in the browser's zone
    usage = page.locator(".card:has(h2:text-is('Usage')) dl").inner_text()
    assert re.search(r"input tokens\s+54\s+output tokens\s+17\s+total tokens\s+71\s+tool calls\s+3$", usage)


def test_a_tool_call_shows_as_it_starts_and_as_it_ends(
    context: Any, daemon: Any, messages_api: FakeMessagesAPI
) -> None:
    # The model takes a moment each turn, so the run is running before the call starts and after it ends.
    messages_api.replies[:] = [
        Reply(text="Waiting.", tool_uses=[("slow", {"service": "db"})], delay=0.8),
        Reply(text="Done.", delay=0.8),
    ]
    page = signed_in(context, daemon)
    run_id = daemon.fire("triage", {"alert": "db slow"})
    page.goto(f"{daemon.url}/ui/runs/{run_id}")
    page.wait_for_selector("#run-status[data-status=running]", state="attached")
    running = page.wait_for_selector("ol.steps > li.t-running")  # the page reloads as the call starts
    assert "slow" in running.inner_text() and "running" in running.inner_text()
    done = page.wait_for_selector("ol.steps > li.t-completed")  # and as it ends, the run still going
    assert '"service": "db"' in done.inner_text()
    assert page.get_attribute("#run-status", "data-status") == "running"
    page.wait_for_selector("#run-status[data-status=completed]", state="attached")
    assert daemon.run(run_id)["status"] == "completed"


def _rgb(hex_color: str) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def test_fire_refuses_an_input_that_is_not_json_and_a_phone_needs_no_sideways_scroll(browser: Any, daemon: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = signed_in(context, daemon)
        for path in ("/ui/", "/ui/triggers", "/ui/runs", "/ui/dead-letters", "/ui/sources"):
            page.goto(daemon.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        page.goto(daemon.url + "/ui/triggers")
        before = len(_runs(daemon))
        page.fill("#echo textarea[name=input]", "{not json")
        page.click("#echo button[type=submit]")
        assert "not valid JSON" in page.wait_for_selector("#notice.bad").inner_text()
        assert len(_runs(daemon)) == before  # nothing was sent
    finally:
        context.close()


def test_cancel_a_running_run(context: Any, daemon: Any) -> None:
    run_id = daemon.fire("sleepy")
    daemon.wait_run(run_id, {"running"})
    page = signed_in(context, daemon)
    page.goto(f"{daemon.url}/ui/runs/{run_id}")
    cancel = page.locator("button[data-post$='/cancel']")
    cancel.click()
    assert cancel.inner_text() == "Cancel this run?"  # the first click only arms the button
    cancel.click()
    page.wait_for_selector(".card .badge.s-cancelled")
    assert daemon.wait_run(run_id, FINAL)["status"] == "cancelled"


def test_replay_dead_letters_one_and_several_after_a_preview(context: Any, daemon: Any) -> None:
    failed = [daemon.fire("broken") for _ in range(3)]
    for run_id in failed:
        assert daemon.wait_run(run_id)["status"] == "failed"
    page = signed_in(context, daemon)
    page.goto(daemon.url + "/ui/dead-letters")
    assert "boom" in page.inner_text(f"tr[data-id='{failed[0]}'] td.reason")
    page.click(f"tr[data-id='{failed[0]}'] button[data-post]")
    replay = page.wait_for_selector("#notice a").inner_text()
    assert daemon.run(replay)["replay_of"] == failed[0]
    page.wait_for_selector(f"tr[data-id='{failed[0]}']", state="detached")  # the page reloads without it
    for run_id in failed[1:]:
        page.check(f"input.pick[value='{run_id}']")
    page.click("[data-bulk-replay]")
    assert page.inner_text("#bulk-count") == "Replay 2 dead letters?"  # the preview, before anything is sent
    assert not [r for r in _runs(daemon) if r["replay_of"] in failed[1:]]
    page.click("[data-bulk-confirm]")
    page.wait_for_selector("#notice:text('Replayed 2.')")
    replayed = wait_for(lambda: {r["replay_of"] for r in _runs(daemon)} >= set(failed), what="the replays")
    assert replayed


def _runs(daemon: Any) -> list[dict[str, Any]]:
    status, body = daemon.request("GET", "/v1/runs?limit=200")
    assert status == 200
    return list(body["runs"])


def test_actions_need_the_csrf_token_and_a_same_site_origin(context: Any, daemon: Any) -> None:
    page = signed_in(context, daemon)
    csrf = page.get_attribute("meta[name=csrf-token]", "content")
    url = daemon.url + "/ui/api/triggers/echo/fire"
    bare = context.request.post(url, data={"input": {}})  # the session cookie, no token
    assert bare.status == 403 and "CSRF" in bare.text()
    wrong = context.request.post(url, data={"input": {}}, headers={"X-CSRF-Token": "x" + str(csrf)})
    assert wrong.status == 403
    foreign = context.request.post(url, data={}, headers={"X-CSRF-Token": str(csrf), "Origin": "https://evil.test"})
    assert foreign.status == 403
    fired = context.request.post(url, data={"input": {"n": 1}}, headers={"X-CSRF-Token": str(csrf)})
    assert fired.status == 202 and fired.json()["run_id"]
    missing = context.request.post(daemon.url + "/ui/api/nothing/here", headers={"X-CSRF-Token": str(csrf)})
    assert missing.status == 404
    # no session at all: 401 (the API token is no way in either)
    assert http("POST", url, {}, {"Authorization": f"Bearer {TOKEN}"})[0] == 401


def test_every_page_has_the_strict_policy_and_breaks_none_of_it(context: Any, daemon: Any) -> None:
    violations: list[str] = []
    page = signed_in(context, daemon)
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text else None)
    run_id = daemon.fire("echo")
    daemon.wait_run(run_id)
    for path in ("/ui/", "/ui/triggers", "/ui/runs", f"/ui/runs/{run_id}", "/ui/dead-letters", "/ui/sources"):
        response = page.goto(daemon.url + path)
        assert response is not None and response.status == 200, path
        headers = response.headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert "data:" not in headers["content-security-policy"]  # no exception the console does not use
        assert headers["x-frame-options"] == "DENY"
        assert page.locator("header nav a").count() == 5  # the stylesheet and script loaded under the policy
        assert page.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"
    assert violations == []


def test_nothing_secret_is_rendered(context: Any, daemon: Any) -> None:
    run_id = daemon.fire("echo", {"leaked": SECRET, "also": TOKEN})
    daemon.wait_run(run_id)
    page = signed_in(context, daemon)
    for path in ("/ui/", "/ui/triggers", "/ui/runs", f"/ui/runs/{run_id}", "/ui/dead-letters"):
        page.goto(daemon.url + path)
        html = page.content()
        assert SECRET not in html and TOKEN not in html, path
    page.goto(f"{daemon.url}/ui/runs/{run_id}")
    assert '"leaked": "***"' in page.inner_text("main")
    page.goto(daemon.url + "/ui/triggers")
    assert re.search(r"POST /webhooks/hook\s*\(bearer\)", page.inner_text("#hook"))


def test_pause_and_resume_a_webhook_and_see_its_flow_controls_skips_and_held_runs(context: Any, daemon: Any) -> None:
    page = signed_in(context, daemon)
    page.goto(daemon.url + "/ui/triggers")
    gate = "#gate"
    assert page.locator(f"{gate} .badge.s-paused").count() == 0
    assert re.search(r"budget\s+0 of 1 runs / hour", page.inner_text(gate))
    page.click(f"{gate} button:text-is('Pause')")  # the console's action: CSRF token, then POST /v1/.../pause
    page.wait_for_selector(f"{gate} button:text-is('Resume')")  # the page reloaded with the stored pause
    assert page.locator(f"{gate} h2 .badge.s-paused").inner_text() == "paused"
    status, described = daemon.request("GET", "/v1/triggers/gate")
    assert status == 200 and described["paused"] is True
    since = page.locator(f"{gate} dd time").first
    assert since.get_attribute("datetime") == described["paused_at"]  # since when, in the browser's zone
    assert "answers 503" in page.inner_text(gate)
    status, _, headers = _raw(daemon, "POST", "/webhooks/gate", b"{}", {"Content-Type": "application/json"})
    assert status == 503 and int(headers["Retry-After"]) > 0

    page.click(f"{gate} button:text-is('Resume')")
    page.wait_for_selector(f"{gate} button:text-is('Pause')")
    assert page.locator(f"{gate} .badge.s-paused").count() == 0
    status, body, _ = _raw(daemon, "POST", "/webhooks/gate", b"{}", {"Content-Type": "application/json"})
    assert status == 202, body
    assert daemon.wait_run(json.loads(body)["run_id"])["status"] == "completed"
    # the budget (one run an hour) is spent: the next firing is recorded skipped, reason budget
    status, body, _ = _raw(daemon, "POST", "/webhooks/gate", b"{}", {"Content-Type": "application/json"})
    skipped = json.loads(body)
    assert (status, skipped["status"]) == (202, "skipped")
    page.reload()
    assert re.search(r"budget\s+1 of 1 runs / hour\s+reached", page.inner_text(gate))
    chip = page.locator(f"{gate} .skips a.chip")
    assert chip.inner_text() == "budget 1"
    chip.click()  # the trigger's skipped runs
    page.wait_for_url(re.compile(r"/ui/runs\?trigger=gate&status=skipped$"))
    assert "skipped (budget)" in page.inner_text(f"#run-{skipped['run_id']}")
    page.goto(f"{daemon.url}/ui/runs/{skipped['run_id']}")
    assert "over budget" in page.inner_text(".card:has(h2:text-is('Run')) dl")

    # a pending run held back by a debounce shows why, and until when, in the list and on its page
    held = daemon.fire("held", {"pr": 7})
    page.goto(daemon.url + "/ui/triggers")
    flow = page.inner_text("#held dl")
    assert re.search(r"concurrency\s+1 at a time per \$\.event\.data\.pr", flow)
    assert re.search(r"debounce\s+1h after a burst's last firing per \$\.event\.data\.repo", flow)
    assert re.search(r"throttle\s+5 starts per 1m\n", flow)
    page.goto(daemon.url + "/ui/runs?trigger=held")
    assert re.search(r"pending\s+\(debounced\)", page.inner_text(f"#run-{held}"))
    page.goto(f"{daemon.url}/ui/runs/{held}")
    facts = page.inner_text(".card:has(h2:text-is('Run')) dl")
    assert "debounced" in facts and "waits for its burst to end" in facts
    assert "not before" in facts and daemon.run(held)["status"] == "pending"


def _raw(
    daemon: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, source: str = ""
) -> Any:
    """One request; from loopback address `source` when given (127.0.0.0/8 is all loopback)."""
    connection = HTTPConnection("127.0.0.1", daemon.port, timeout=10, source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace"), answer.headers
    finally:
        connection.close()


def test_a_form_or_an_origin_that_cannot_be_read_is_refused_never_an_error_of_ours(daemon: Any) -> None:
    form = "application/x-www-form-urlencoded"
    for body, kind in (
        (b"token=\xff\xfe", form),  # not UTF-8
        (b"token=x", form + "; charset=no-such-charset"),
        (b"--x\r\n", "multipart/form-data; boundary=x"),
    ):
        status, text, headers = _raw(daemon, "POST", "/ui/sign-in", body, {"Content-Type": kind})
        assert (status, text.startswith("the form cannot be read")) == (400, True), (body, kind, text)
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    # an Origin that is no URL is no origin of ours; a `next` that is none is the overview
    status, text, _ = _raw(daemon, "POST", "/ui/sign-in", b"token=x", {"Content-Type": form, "Origin": "http://["})
    assert status == 403 and "another site" in text
    status, text, _ = _raw(daemon, "GET", "/ui/sign-in?next=http://[")
    assert status == 200 and 'name="next" value="/ui/"' in text
    for bad_next in ("http://[", "/ui/%0D%0ASet-Cookie:%20x=1", "/ui/%00"):  # no Location aiohttp would send
        body = f"token={TOKEN}&next={bad_next}".encode()
        status, _, headers = _raw(daemon, "POST", "/ui/sign-in", body, {"Content-Type": form})
        assert (status, headers["Location"]) == (303, "/ui/"), bad_next


XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def test_a_payload_with_markup_is_shown_as_text_and_runs_nothing(context: Any, daemon: Any) -> None:
    """A webhook payload is the attacker's: in a run's input, output and error, and a dead letter."""
    runs = []
    for hook in ("hook", "complaint"):  # cat: the payload is the output too; cat >&2: the error too
        status, answer = http(
            "POST", f"{daemon.url}/webhooks/{hook}", {"note": XSS}, {"Authorization": f"Bearer {SECRET}"}
        )
        assert status == 202, answer
        runs.append(daemon.wait_run(answer["run_id"]))
    shown = json.dumps(XSS)[1:-1]  # as it stands in JSON text (input, output) and in the error (a JSON input)
    assert [r["status"] for r in runs] == ["completed", "failed"] and shown in runs[1]["error"]
    violations: list[str] = []
    page = signed_in(context, daemon)
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text else None)
    for path in [f"/ui/runs/{r['id']}" for r in runs] + ["/ui/dead-letters", "/ui/runs"]:
        page.goto(daemon.url + path)
        assert page.locator("main img, main script").count() == 0, path  # no element was made of it
        assert page.evaluate("window.pwned") is None, path
    page.goto(f"{daemon.url}/ui/runs/{runs[0]['id']}")
    assert str(page.text_content("main")).count(shown) == 2  # input and output (folded), as text
    page.goto(f"{daemon.url}/ui/runs/{runs[1]['id']}")
    assert shown in page.inner_text(".card.error")
    page.goto(daemon.url + "/ui/dead-letters")
    row = str(page.text_content(f"tr[data-id='{runs[1]['id']}']"))
    assert row.count(shown) == 2  # reason and payload, as text
    assert violations == []  # nothing the policy had to stop either


def _session(daemon: Any) -> tuple[str, str]:
    """A signed-in session over plain HTTP: its cookie header and its CSRF token."""
    status, _, headers = _raw(
        daemon, "POST", "/ui/sign-in", f"token={TOKEN}".encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    status, text, _ = _raw(daemon, "GET", "/ui/", headers={"Cookie": cookie})
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', text)
    assert status == 200 and csrf is not None
    return cookie, csrf.group(1)


def _feed(daemon: Any, cookie: str) -> tuple[HTTPConnection, Any]:
    connection = HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    connection.request("GET", "/ui/events", headers={"Cookie": cookie})
    answer = connection.getresponse()
    if answer.status == 200:
        assert answer.read(13) == b"retry: 2000\n\n"
    return connection, answer


def test_live_feeds_are_bounded_and_a_feed_ends_with_its_session(daemon: Any) -> None:
    from triggerd.console.live import MAX_FEEDS

    cookie, csrf = _session(daemon)
    open_feeds: list[HTTPConnection] = []
    refused = None
    try:
        for _ in range(MAX_FEEDS + 1):  # pages of earlier tests may hold a few for a moment
            connection, answer = _feed(daemon, cookie)
            if answer.status != 200:
                refused = answer.status, answer.read().decode()
                connection.close()
                break
            open_feeds.append(connection)
        assert refused is not None and refused[0] == 503 and f"{MAX_FEEDS} live feeds" in refused[1]
        assert len(open_feeds) <= MAX_FEEDS
    finally:
        for connection in open_feeds:
            connection.close()

    # the browsers that left free their places within a poll
    def admitted() -> tuple[HTTPConnection, Any] | None:
        connection, answer = _feed(daemon, cookie)
        if answer.status == 200:
            return connection, answer
        connection.close()
        return None

    connection, answer = wait_for(admitted, what="a place freed by the feeds that were closed")
    form = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = _raw(daemon, "POST", "/ui/sign-out", f"csrf={csrf}".encode(), form)
    assert status == 303
    started = time.monotonic()
    assert answer.read() is not None  # to the end: the stream stops once its session is gone
    assert time.monotonic() - started < 5
    connection.close()


def test_sign_in_refuses_an_address_after_ten_wrong_tokens(daemon: Any) -> None:
    from triggerd.console.access import SignInLimit

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    guesser = "127.0.0.23"  # its own address: the other tests keep signing in from 127.0.0.1
    for n in range(SignInLimit.FAILURES):
        status, text, _ = _raw(daemon, "POST", "/ui/sign-in", f"token=guess-{n}".encode(), form, guesser)
        assert status == 401 and "not one of the admin tokens" in text
    for token in ("guess-again", TOKEN):  # the right token too: a 303 would tell a right guess
        status, text, headers = _raw(daemon, "POST", "/ui/sign-in", f"token={token}".encode(), form, guesser)
        assert status == 429 and "Too many wrong tokens" in text
        assert 0 < int(headers["Retry-After"]) <= SignInLimit.WINDOW
    assert _raw(daemon, "POST", "/ui/sign-in", f"token={TOKEN}".encode(), form)[0] == 303  # another address


def test_open_on_loopback_without_tokens(tmp_path: Path) -> None:
    defs = DEFS.split("---\n")[0] + "---\ntrigger: {id: echo, type: event, event: {pattern: x}, agent: {id: echo}}\n"
    with running_daemon(tmp_path, defs) as daemon:
        status, body = http("GET", daemon.url + "/ui/")
        assert status == 200 and "<h1>Overview</h1>" in body
        assert http("GET", daemon.url + "/ui/sign-in")[0] == 200  # redirected to the overview: nothing to sign in to
        assert http("GET", daemon.url + "/ui/runs?status=bogus")[0] == 400
        missing = urllib.request.Request(daemon.url + "/ui/runs/nope")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(missing, timeout=10)
        assert refused.value.code == 404 and "no run 'nope'" in refused.value.read().decode()
        assert "default-src 'self'" in refused.value.headers["Content-Security-Policy"]  # on errors too
        assert http("POST", daemon.url + "/ui/api/triggers/echo/fire", {})[0] == 403  # no session, no CSRF token


def test_served_on_the_admin_listener_only(tmp_path: Path) -> None:
    admin_port = free_port()
    defs = DEFS.split("---\n")[0] + "---\ntrigger: {id: echo, type: event, event: {pattern: x}, agent: {id: echo}}\n"
    with running_daemon(tmp_path, defs, f'admin:\n  listen: "127.0.0.1:{admin_port}"\n') as daemon:
        assert http("GET", daemon.url + "/ui/")[0] == 404  # the webhook listener has no console
        assert http("GET", daemon.url + "/ui/static/console.js")[0] == 404
        status, body = http("GET", f"http://127.0.0.1:{admin_port}/ui/triggers")
        assert status == 200 and 'id="echo"' in body


def test_an_open_live_stream_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    defs = DEFS.split("---\n")[0] + "---\ntrigger: {id: echo, type: event, event: {pattern: x}, agent: {id: echo}}\n"
    with running_daemon(tmp_path, defs) as daemon:
        stream = HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        stream.request("GET", "/ui/events")
        answer = stream.getresponse()
        assert answer.status == 200 and answer.getheader("Content-Type") == "text/event-stream"
        assert answer.read(13) == b"retry: 2000\n\n"
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10  # aiohttp would wait 60 s for a handler that never ends
        stream.close()
