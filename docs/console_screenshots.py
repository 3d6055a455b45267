"""Take the screenshots of docs/console.md: the default configuration (config/) with some runs in it.

    .venv/bin/python docs/console_screenshots.py        # writes docs/console/*.png

It copies config/ to a temporary folder (a free port, its own store), starts the daemon, makes
runs the way an operator would (webhooks, a manual fire, one that fails and becomes a dead
letter, which the failure-log trigger then records), adds two webhook triggers with flow control
(FLOW: a concurrency key, a throttle and a budget that the seeding runs into; a debounce that
holds a burst's last push), pauses the schedule, and photographs each page in headless
Chromium (Debian's, as the tests use) at a laptop's size, and the runs page at a phone's.
Then it adds an anthropic agent with tools (hot reload) that talks to the tests' fake Messages
API on loopback (tests/fake_anthropic.py: no network, no key) and photographs a run that acts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests' fake Messages API
from tests.fake_anthropic import FakeMessagesAPI, Reply  # noqa: E402

OUT = REPO / "docs" / "console"
CHROMIUM = os.environ.get("TRIGGERD_CHROMIUM", "/usr/bin/chromium")
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (http://127.0.0.1 only)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _wait(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


FLOW = """\
trigger:
  id: pr-review
  name: "Review pull requests"
  type: webhook
  webhook: {endpoint: /webhooks/pr}
  agent: {id: echo, input_mapping: {pr: "$.body.pr"}}
  concurrency_key: "$.body.pr"
  throttle: {limit: 10, per: "1m"}
  budget: {runs_per_hour: 3}
---
trigger:
  id: docs-build
  name: "Build the docs after a burst of pushes"
  type: webhook
  webhook: {endpoint: /webhooks/push}
  agent: {id: echo, input_mapping: {sha: "$.body.after"}}
  debounce: {period: "10m", key: "$.body.repository"}
"""


def _flow(url: str) -> str:
    """Four pull-request events against a budget of three runs an hour, and a burst of three pushes;
    returns the run the burst leaves waiting."""
    for pr in (41, 42, 41, 43):
        _call("POST", url + "/webhooks/pr", {"pr": pr})
    for sha in ("a1f3", "b7c2", "c9d4"):
        held = _call("POST", url + "/webhooks/push", {"repository": "acme/docs", "after": sha})["run_id"]
    _call("POST", url + "/v1/triggers/disk-check/pause")

    def settled() -> bool:
        runs = _call("GET", url + "/v1/runs?limit=100")["runs"]
        return all(r["status"] not in ("pending", "running") or r["reason"] == "debounced" for r in runs)

    _wait("the pull-request runs to finish", settled)
    return str(held)


def _seed(url: str) -> dict[str, str]:
    """Runs of every kind the default configuration makes; returns the ids worth a detail page."""
    for name in ("Ada", "Grace", "Edsger", "Barbara"):
        _call("POST", url + "/webhooks/hello", {"name": name})
    failed = _call("POST", url + "/v1/triggers/disk-check/fire", {"input": {"path": "/no/such/volume"}})["run_id"]
    _wait("the failing run", lambda: _call("GET", f"{url}/v1/runs/{failed}")["status"] == "failed")
    completed = _call("POST", url + "/v1/triggers/disk-check/fire", {"input": {}})["run_id"]
    _call("POST", url + "/v1/triggers/disk-check/fire", {"input": {}})  # overlap: skip, while the one before runs
    _call("POST", url + "/v1/triggers/hello/fire", {"input": {"name": "console"}})

    def settled() -> bool:
        runs = _call("GET", url + "/v1/runs?limit=100")["runs"]
        sources = {r["source"] for r in runs}
        return all(r["status"] not in ("pending", "running") for r in runs) and "event" in sources

    _wait("the runs to finish (and failure-log to record the failure)", settled)
    return {"completed": completed, "failed": failed}


TRIAGE = """\
agent:
  id: triage
  description: "Looks at the disks and says what to do (the fake Messages API answers)."
  type: anthropic
  model: claude-sonnet-4-5
  prompt: "A disk alert: {{{{ alert }}}}. Check the volumes and say what to do."
  api_key: fake-key
  base_url: "{base_url}"
  tools:
    - agent: disk-usage
      input_schema: {{type: object, properties: {{path: {{type: string}}}}, required: [path]}}
---
trigger:
  id: triage
  name: "Disk alert triage"
  type: event
  event: {{pattern: disk.alert}}
  agent: {{id: triage}}
  retry: {{max_attempts: 1}}
"""


def _tool_run(url: str, root: Path, api: FakeMessagesAPI) -> str:
    """A run of an agent with tools: two tool calls, one of them failing, then the answer."""
    api.replies[:] = [
        Reply(text="Checking the root volume.", tool_uses=[("disk-usage", {"path": "/"})]),
        Reply(text="And the data volume.", tool_uses=[("disk-usage", {"path": "/no/such/volume"})]),
        Reply(
            text='{"summary": "/ has room; /no/such/volume is not mounted", "action": "remount the data volume"}',
            usage={"input_tokens": 412, "output_tokens": 38},
        ),
    ]
    (root / "agents" / "triage.yaml").write_text(TRIAGE.format(base_url=api.base_url))
    _wait("the reload", lambda: any(t["id"] == "triage" for t in _call("GET", url + "/v1/triggers")["triggers"]))
    run_id = str(_call("POST", url + "/v1/triggers/triage/fire", {"input": {"alert": "disk 91% full"}})["run_id"])
    _wait("the tool run", lambda: _call("GET", f"{url}/v1/runs/{run_id}")["status"] == "completed")
    return run_id


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "config"
        shutil.copytree(REPO / "config", root, ignore=shutil.ignore_patterns(".triggerd"))
        (root / "triggers" / "flow.yaml").write_text(FLOW)
        port = _port()
        settings = root / "triggerd.yaml"
        settings.write_text(settings.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        url = f"http://127.0.0.1:{port}"
        log = (Path(folder) / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "triggerd", "run", "--config", str(settings)], cwd=root, stdout=log, stderr=log
        )
        try:
            _wait("the daemon", lambda: _call("GET", url + "/readyz")["status"] == "ready")
            runs = _seed(url)
            held = _flow(url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                pages = {
                    "overview": "/ui/",
                    "triggers": "/ui/triggers",
                    "runs": "/ui/runs",
                    "run": f"/ui/runs/{runs['completed']}",
                    "run-failed": f"/ui/runs/{runs['failed']}",
                    "run-held": f"/ui/runs/{held}",
                    "dead-letters": "/ui/dead-letters",
                    "sources": "/ui/sources",
                }
                for size, viewport, names in (("", LAPTOP, pages), ("-phone", PHONE, {"runs": "/ui/runs"})):
                    context = browser.new_context(viewport=viewport, color_scheme="light", timezone_id="Europe/Paris")
                    page = context.new_page()
                    for name, path in names.items():
                        page.goto(url + path)
                        page.wait_for_timeout(1000)  # the script has localised the times (a live page never idles)
                        page.screenshot(path=str(OUT / f"{name}{size}.png"), full_page=name == "triggers")
                        print(OUT / f"{name}{size}.png")
                    context.close()
                with FakeMessagesAPI([], api_key="fake-key") as api:
                    tools = _tool_run(url, root, api)
                context = browser.new_context(viewport=LAPTOP, color_scheme="light", timezone_id="Europe/Paris")
                page = context.new_page()
                page.goto(f"{url}/ui/runs/{tools}")
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / "run-tools.png"), full_page=True)
                print(OUT / "run-tools.png")
                context.close()
                browser.close()
        finally:
            daemon.terminate()
            daemon.wait(30)
            log.close()


if __name__ == "__main__":
    main()
