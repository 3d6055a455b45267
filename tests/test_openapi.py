"""GET /v1/openapi.json describes the admin API exactly as implemented (SPEC 7.2, issue 8).

schemathesis generates requests from the description against a live daemon: no 500, and every
answer's status code, content type and body must be the ones described.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from tests.harness import running_daemon
from triggerd.http.admin import add_admin_routes
from triggerd.http.openapi import openapi

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger: {id: hook, type: webhook, webhook: {}, agent: {id: echo}}
---
trigger: {id: nightly, type: schedule, schedule: {cron: "0 3 * * *"}, agent: {id: echo}}
---
trigger: {id: errors, type: event, event: {pattern: "error.*", count_threshold: 3, window: 1m}, agent: {id: echo}}
"""


def test_every_admin_route_is_described_and_nothing_else() -> None:
    app = web.Application()
    add_admin_routes(app, cast(Any, None), ())
    implemented = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    described = {
        (method, path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert described == implemented


def test_schemathesis_finds_no_500_and_no_answer_that_breaks_the_description(tmp_path: Path) -> None:
    # schemathesis keeps a crash cache in ./.schemathesis and hypothesis examples in ./.hypothesis:
    # run it in a scratch folder with the cache off, so a test run leaves nothing in the checkout.
    scratch = tmp_path / "schemathesis"
    scratch.mkdir()
    (scratch / "schemathesis.toml").write_text("[cache]\nenabled = false\n")
    with running_daemon(tmp_path / "daemon", DEFS, 'admin:\n  tokens: ["t0ken-of-16-chars"]\n') as daemon:
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(scratch / "schemathesis.toml"),
                "run",
                f"{daemon.url}/v1/openapi.json",
                "-H",
                "Authorization: Bearer t0ken-of-16-chars",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "25",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=scratch,
        )
        internal = [line for line in daemon.log_lines() if line.get("message", "").startswith("internal error")]
    summary = proc.stdout[proc.stdout.find("SUMMARY") :]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Tested: 18" in summary, summary  # every operation but the one serving the description itself
    assert " failed" not in summary.split("Test cases:")[1].split("\n")[1], summary
    assert internal == []
