"""The admin API's rules (SPEC 7.2): tokens, loopback-only, errors that are never 500, no secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.harness import free_port, http, run_cli, running_daemon, write_config
from triggerd.config.loader import LoadMode, load

DEFS = """\
agent:
  id: echo
  type: command
  command: [cat]
---
trigger:
  id: hook
  type: webhook
  webhook:
    authentication: {type: bearer, secret: "${HOOK_SECRET}"}
  agent: {id: echo, input: {a: 1}}
---
trigger:
  id: other
  type: event
  event: {pattern: "x.*"}
  agent: {id: echo}
"""
ENV = {"HOOK_SECRET": "hook-secret-value", "ADMIN_TOKEN": "admin-token-value"}


def test_tokens_are_required_when_configured_and_health_needs_none(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DEFS, 'admin:\n  tokens: ["${ADMIN_TOKEN}"]\n', env=ENV) as daemon:
        status, body = daemon.request("GET", "/v1/triggers")
        assert (status, body) == (401, {"error": "a valid admin token is required"})
        assert daemon.request("GET", "/v1/triggers", headers={"Authorization": "Bearer nope"})[0] == 401
        assert daemon.request("GET", "/v1/triggers", headers={"Authorization": "Basic admin-token-value"})[0] == 401
        status, body = daemon.request("GET", "/v1/triggers", headers={"Authorization": "Bearer admin-token-value"})
        assert status == 200
        assert [t["id"] for t in body["triggers"]] == ["hook", "other"]
        assert daemon.request("GET", "/healthz")[0] == 200
        assert daemon.request("GET", "/readyz") == (200, {"status": "ready"})
        log = daemon.log.read_text()
    assert "hook-secret-value" not in json.dumps(body)
    assert body["triggers"][0]["webhook"] == {
        "method": "POST",
        "endpoint": "/webhooks/hook",
        "authentication": "bearer",
    }
    assert "admin-token-value" not in log
    assert "hook-secret-value" not in log


def test_admin_on_its_own_listener_is_not_served_with_webhooks(tmp_path: Path) -> None:
    admin_port = free_port()
    with running_daemon(tmp_path, DEFS, f'admin:\n  listen: "127.0.0.1:{admin_port}"\n', env=ENV) as daemon:
        assert daemon.request("GET", "/v1/triggers")[0] == 404
        assert http("GET", f"http://127.0.0.1:{admin_port}/v1/triggers")[0] == 200
        assert http("GET", f"http://127.0.0.1:{admin_port}/healthz")[0] == 200


def _run_refused(settings: Path) -> subprocess.CompletedProcess[str]:
    """`triggerd run` on settings it should refuse: it must exit by itself."""
    return run_cli(None, "run", "--config", str(settings), env=ENV)


def test_a_non_loopback_listener_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    write_config(tmp_path, DEFS)
    settings = tmp_path / "triggerd.yaml"
    settings.write_text(settings.read_text().replace("127.0.0.1", "0.0.0.0"))
    proc = _run_refused(settings)
    assert proc.returncode == 1
    assert "which is not loopback, with no admin.tokens" in proc.stderr


def test_an_unsupported_store_url_refuses_to_start_with_its_line(tmp_path: Path) -> None:
    write_config(tmp_path, DEFS)
    settings = tmp_path / "triggerd.yaml"
    text = settings.read_text()
    assert "sqlite:///" in text
    settings.write_text(re.sub(r"sqlite:///[^\"'\s}]*", "mysql://u:hunter2-secret@db/triggerd", text))
    proc = _run_refused(settings)
    assert proc.returncode == 1
    # Not a schema pattern error: that would quote the whole URL, password and all.
    assert f"{settings}:4:8: error: store URL scheme 'mysql' is not supported" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr


def test_a_postgresql_store_without_the_extra_refuses_to_start_with_its_line(tmp_path: Path) -> None:
    write_config(tmp_path, DEFS)
    settings = tmp_path / "triggerd.yaml"
    settings.write_text(
        re.sub(r"sqlite:///[^\"'\s}]*", "postgresql://u:hunter2-secret@db/triggerd", settings.read_text())
    )
    # psycopg is installed here (the test extra): block its import, as on an installation without the extra
    blocked = "import sys; sys.modules['psycopg'] = None; from triggerd.cli import main; raise SystemExit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", blocked, "run", "--config", str(settings)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], **ENV},
        check=False,
    )
    assert proc.returncode == 1
    sqlite = tmp_path / "sqlite.yaml"  # without the extra, SQLite settings stay valid
    sqlite.write_text('store: {url: "sqlite:///./x.db"}\ndefinitions: [defs]\n')
    validated = subprocess.run(
        [sys.executable, "-c", blocked, "validate", "--config", str(sqlite)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert validated.returncode == 0, validated.stderr
    expected = f"{settings}:4:8: error: the postgresql store needs the postgres extra: pip install 'triggerd[postgres]'"
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr


def test_postgresql_store_settings_are_accepted_with_their_defaults(tmp_path: Path) -> None:
    settings = tmp_path / "triggerd.yaml"
    settings.write_text('store:\n  url: "postgresql://triggerd@db.internal:5433/triggerd"\n')
    store = load(settings, mode=LoadMode.VALIDATE, env={}).configuration.settings.store  # type: ignore[union-attr]
    assert (store.url, store.lease, store.pool_size) == ("postgresql://triggerd@db.internal:5433/triggerd", 30.0, 10)
    assert store.instance == ""  # the daemon names itself host:pid when it starts (triggerd/dispatch/instances.py)
    settings.write_text(
        'store:\n  url: "postgresql://triggerd@db/t"\n  instance: "${HOST}"\n  lease: "1m"\n  pool_size: 3\n'
    )
    store = load(settings, mode=LoadMode.VALIDATE, env={"HOST": "web-2"}).configuration.settings.store  # type: ignore[union-attr]
    assert (store.instance, store.lease, store.pool_size) == ("web-2", 60.0, 3)
    for setting, message in (
        ("lease: 0", "must be at least 1s: a lease is renewed every third of it"),
        ("pool_size: 0", "0 must be >= 1"),
    ):
        settings.write_text(f'store:\n  url: "postgresql://triggerd@db/t"\n  {setting}\n')
        problems = [(p.line, p.message) for p in load(settings, mode=LoadMode.VALIDATE, env={}).problems]
        assert problems == [(3, message)]


def test_errors_are_precise_and_never_500(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DEFS, env=ENV) as daemon:
        run_id = daemon.fire("hook", {"b": 2})
        run = daemon.wait_run(run_id)
        assert run["input"] == {"a": 1, "b": 2}
        cases = [
            ("POST", "/v1/triggers/nope/fire", {}, 404),
            ("GET", "/v1/triggers/nope", None, 404),
            ("GET", "/v1/runs/nope", None, 404),
            ("POST", "/v1/runs/nope/cancel", None, 404),
            ("POST", "/v1/runs/nope/replay", None, 404),
            ("GET", "/v1/triggers/nope/executions", None, 404),
            ("GET", f"/v1/triggers/other/executions/{run_id}", None, 404),
            ("POST", f"/v1/runs/{run_id}/cancel", None, 409),
            ("POST", f"/v1/triggers/hook/executions/{run_id}/cancel", None, 409),
            ("POST", f"/v1/triggers/other/executions/{run_id}/cancel", None, 404),
            ("GET", "/v1/runs?limit=0", None, 400),
            ("GET", "/v1/runs?limit=abc", None, 400),
            ("GET", "/v1/runs?status=weird", None, 400),
            ("POST", "/v1/triggers/hook/fire", [1, 2], 400),
            ("POST", "/v1/triggers/hook/fire", {"input": "text"}, 400),
            ("DELETE", "/v1/runs", None, 405),
        ]
        for method, path, body, expected in cases:
            status, answer = daemon.request(method, path, body)
            assert status == expected, (method, path, answer)
        status, answer = http("POST", daemon.url + "/v1/triggers/hook/fire", raw=b"{not json")
        assert (status, answer) == (400, {"error": "the body is not valid JSON"})


def test_listing_filters_and_pages(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DEFS, env=ENV) as daemon:
        ids = [daemon.fire("hook") for _ in range(3)] + [daemon.fire("other")]
        for run_id in ids:
            daemon.wait_run(run_id)
        _, page = daemon.request("GET", "/v1/runs?limit=2")
        assert [r["id"] for r in page["runs"]] == ids[::-1][:2]
        _, rest = daemon.request("GET", f"/v1/runs?limit=2&before={page['next_before']}")
        assert [r["id"] for r in rest["runs"]] == ids[::-1][2:]
        _, hook_runs = daemon.request("GET", "/v1/triggers/hook/executions?status=completed")
        assert [r["id"] for r in hook_runs["runs"]] == ids[2::-1]
        _, one = daemon.request("GET", f"/v1/triggers/hook/executions/{ids[0]}")
        assert one["id"] == ids[0]
        _, trigger = daemon.request("GET", "/v1/triggers/hook")
        assert trigger["state"]["runs"] == {"completed": 3}
        assert trigger["state"]["last_run"]["id"] == ids[2]


def test_cli_commands_talk_to_the_running_daemon(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DEFS, 'admin:\n  tokens: ["${ADMIN_TOKEN}"]\n', env=ENV) as daemon:
        daemon.token = ENV["ADMIN_TOKEN"]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli(tmp_path, *args, "--config", "triggerd.yaml", env=ENV)

        fired = cli("fire", "hook", "--input", '{"b": 3}')
        assert fired.returncode == 0, fired.stderr
        run_id, status = fired.stdout.split()
        assert status == "pending"
        daemon.wait_run(run_id)
        shown = json.loads(cli("show", run_id).stdout)
        assert (shown["status"], shown["output"]) == ("completed", {"a": 1, "b": 3})
        listed = cli("runs", "--trigger", "hook").stdout.splitlines()
        assert listed[0].split() == ["RUN", "STATUS", "TRIGGER", "ATTEMPTS", "CREATED"]
        assert listed[1].split()[:4] == [run_id, "completed", "hook", "1"]
        replayed = cli("replay", run_id)
        assert replayed.returncode == 0
        assert replayed.stdout.endswith(f"(replay of {run_id})\n")
        refused = cli("cancel", run_id)
        assert refused.returncode == 1
        assert refused.stderr.startswith("triggerd cancel: 409: run")
        missing = cli("show", "nope")
        assert (missing.returncode, missing.stderr) == (1, "triggerd show: 404: no run 'nope'\n")


def test_cli_reports_an_unreachable_daemon(tmp_path: Path) -> None:
    port = write_config(tmp_path, DEFS)
    proc = run_cli(tmp_path, "runs", "--config", "triggerd.yaml")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"triggerd runs: cannot reach triggerd at http://127.0.0.1:{port}")
