"""Webhooks through the running daemon: every row of SPEC 7.1 and every authentication type over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.harness import FIXTURES, Daemon, http, running_daemon, wait_for, write_config
from tests.test_webhook_auth import FIELDS, NEW, OLD, signed
from triggerd.config.models import AuthType

PY = json.dumps(sys.executable)
SECRETS = {"NEW_SECRET": NEW, "OLD_SECRET": OLD}


def auth_trigger(kind: AuthType) -> str:
    fields = "".join(f", {k}: {json.dumps(v)}" for k, v in FIELDS.get(kind, {}).items())
    return (
        f"trigger:\n  id: auth-{kind.value}\n  type: webhook\n  webhook:\n"
        f'    authentication: {{type: {kind.value}, secrets: ["${{NEW_SECRET}}", "${{OLD_SECRET}}"]{fields}}}\n'
        f"  agent: {{id: echo}}\n"
    )


DEFINITIONS = "\n---\n".join(
    [
        "agent:\n  id: echo\n  type: command\n  command: [cat]",
        f"agent:\n  id: slow\n  type: command\n  command: [{PY}, -c, 'import time; time.sleep(2)']",
        """trigger:
  id: mapped
  type: webhook
  webhook: {endpoint: /hooks/mapped, max_body_bytes: 2048}
  agent:
    id: echo
    input: {static: true}
    input_mapping:
      action: $.body.action
      labels: {path: "$.body.labels[*]", default: []}
      repo: {path: $.body.repository.name, required: true}
      who: $.query.who
  idempotency_key: $.body.delivery
  dedupe_window: 1h""",
        """trigger:
  id: filtered
  type: webhook
  webhook:
    endpoint: /hooks/filtered
    filter:
      all:
        - {field: "$.headers['x-event']", operator: eq, value: push}
        - {field: "$.body.ref", operator: starts_with, value: refs/heads/}
  agent: {id: echo}""",
        "trigger:\n  id: disabled\n  type: webhook\n  enabled: false\n  webhook: {}\n  agent: {id: echo}",
        "trigger:\n  id: put-only\n  type: webhook\n  webhook: {method: PUT}\n  agent: {id: echo}",
        """trigger:
  id: skipper
  type: webhook
  webhook: {}
  agent: {id: slow}
  overlap: skip""",
        """trigger:
  id: limited
  type: webhook
  webhook: {rate_limit: {requests: 2, per: 1h}}
  agent: {id: echo}""",
        """trigger:
  id: private
  type: webhook
  webhook: {ip_allowlist: ["10.1.0.0/16"]}
  agent: {id: echo}""",
        "trigger:\n  id: raw\n  type: webhook\n  webhook: {}\n  agent: {id: echo}",
        """trigger:
  id: static
  type: webhook
  webhook: {response: {status: 200, body: "thanks", headers: {X-Handled-By: triggerd}}}
  agent: {id: echo}""",
        """trigger:
  id: fresh-only
  type: webhook
  webhook:
    authentication: {type: slack, secret: "${NEW_SECRET}", tolerance: 1h}
  agent: {id: echo}
  max_event_age: 1m""",
        *(auth_trigger(kind) for kind in AuthType),
        *(
            f"trigger:\n  id: preset-{name}\n  type: webhook\n  webhook:\n"
            f'    authentication: {{type: hmac, secret: "${{NEW_SECRET}}", header: {header}}}\n'
            "  agent: {id: echo}\n"
            for name, header in (("github", "X-Hub-Signature-256"), ("github-sha1", "x-hub-signature"))
        ),
    ]
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("webhooks")
    with running_daemon(root, DEFINITIONS, env=SECRETS, server='  trusted_proxies: ["127.0.0.1/32"]\n') as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The same daemon on each store, for the tests whose behaviour is the store's (SPEC 10)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("daemon")
        return
    url = request.getfixturevalue("postgres_server").database()
    root = tmp_path_factory.mktemp("webhooks-pg")
    server = '  trusted_proxies: ["127.0.0.1/32"]\n'
    with running_daemon(root, DEFINITIONS, env=SECRETS, server=server, store=url) as running:
        yield running


def post(
    daemon: Daemon, path: str, body: bytes = b"{}", headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, Any]:
    return http(method, daemon.url + path, raw=body, headers={"Content-Type": "application/json", **(headers or {})})


def test_accepted_runs_are_committed_before_the_202(stored: Daemon) -> None:
    body = {"action": "opened", "labels": ["a", "b"], "repository": {"name": "triggerd"}}
    status, answer = post(stored, "/hooks/mapped?who=ada", json.dumps(body).encode())
    assert (status, answer["status"], answer["trigger_id"]) == (202, "pending", "mapped")
    run = stored.run(answer["run_id"])  # already in the store
    assert run["input"] == {"static": True, "action": "opened", "labels": ["a", "b"], "repo": "triggerd", "who": "ada"}
    assert run["source"] == "webhook"


def test_duplicate_idempotency_key_answers_200_with_the_first_run(stored: Daemon) -> None:
    body = json.dumps({"delivery": "d-42", "repository": {"name": "r"}}).encode()
    first = post(stored, "/hooks/mapped", body)[1]
    status, again = post(stored, "/hooks/mapped", body)
    assert (status, again) == (200, {"run_id": first["run_id"], "trigger_id": "mapped", "duplicate": True})


def test_two_daemons_on_one_postgresql_store_store_the_same_delivery_once(tmp_path: Path, postgres_url: str) -> None:
    """A sender's retries spread over two daemons behind a load balancer: one run (SPEC 10)."""
    server = '  trusted_proxies: ["127.0.0.1/32"]\n'
    with (
        running_daemon(tmp_path / "a", DEFINITIONS, env=SECRETS, server=server, store=postgres_url) as first,
        running_daemon(tmp_path / "b", DEFINITIONS, env=SECRETS, server=server, store=postgres_url) as second,
        ThreadPoolExecutor(8) as senders,
    ):
        body = json.dumps({"delivery": "d-7", "repository": {"name": "r"}}).encode()
        answers = list(senders.map(lambda d: post(d, "/hooks/mapped", body), [first, second] * 4))
        assert sorted(status for status, _ in answers) == [200] * 7 + [202]
        assert len({answer["run_id"] for _, answer in answers}) == 1
        run_id = answers[0][1]["run_id"]
        assert second.wait_run(run_id)["status"] == "completed"  # whichever daemon ran it, both see it
        status, listed = first.request("GET", "/v1/triggers/mapped/executions")
        assert status == 200 and [run["id"] for run in listed["runs"]] == [run_id]


def test_filter_false_answers_filtered(daemon: Daemon) -> None:
    assert post(daemon, "/hooks/filtered", b'{"ref": "refs/tags/v1"}', {"X-Event": "push"}) == (
        200,
        {"status": "filtered", "trigger_id": "filtered"},
    )
    assert post(daemon, "/hooks/filtered", b'{"ref": "refs/heads/main"}', {"X-Event": "push"})[0] == 202


def test_overlap_skip_answers_202_skipped(stored: Daemon) -> None:
    assert post(stored, "/webhooks/skipper")[1]["status"] == "pending"
    status, answer = post(stored, "/webhooks/skipper")
    assert (status, answer["status"]) == (202, "skipped")


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/webhooks/nowhere", 404),
        ("POST", "/webhooks/disabled", 404),
        ("POST", "/webhooks/put-only", 405),
        ("GET", "/hooks/mapped", 405),
        ("PUT", "/webhooks/put-only", 202),
    ],
)
def test_unknown_disabled_and_wrong_method(daemon: Daemon, method: str, path: str, expected: int) -> None:
    assert post(daemon, path, method=method)[0] == expected


def test_invalid_json_is_400_and_required_mapping_is_422(daemon: Daemon) -> None:
    status, answer = post(daemon, "/hooks/mapped", b'{"repository": ')
    assert status == 400
    assert answer["error"].startswith("invalid JSON")
    status, answer = post(daemon, "/hooks/mapped", b'{"action": "x"}')
    assert (status, answer["path"]) == (422, "$.body.repository.name")
    assert answer["error"] == "required input 'repo' is missing: $.body.repository.name matched nothing"


def test_body_too_large_is_413_before_it_is_read(daemon: Daemon) -> None:
    assert post(daemon, "/hooks/mapped", b"x" * 3000)[0] == 413
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(
            b"POST /hooks/mapped HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n{"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 413")  # answered with 49,999,999 bytes still unsent


def test_rate_limit_answers_429_with_retry_after(daemon: Daemon) -> None:
    import urllib.error
    import urllib.request

    assert [post(daemon, "/webhooks/limited")[0] for _ in range(2)] == [202, 202]
    request = urllib.request.Request(daemon.url + "/webhooks/limited", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    refused.value.close()
    assert refused.value.code == 429
    assert int(refused.value.headers["Retry-After"]) == 1800


def test_address_allowlist_with_a_trusted_proxy(daemon: Daemon) -> None:
    assert post(daemon, "/webhooks/private")[0] == 403  # 127.0.0.1 itself is not allowed
    forwarded = {"X-Forwarded-For": "10.1.2.3"}
    assert post(daemon, "/webhooks/private", headers=forwarded)[0] == 202  # the proxy (loopback) is trusted
    spoofed = {"X-Forwarded-For": "10.1.2.3, 192.0.2.9"}
    assert post(daemon, "/webhooks/private", headers=spoofed)[0] == 403  # the rightmost untrusted hop counts


def test_static_response(daemon: Daemon) -> None:
    import urllib.request

    request = urllib.request.Request(daemon.url + "/webhooks/static", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert (response.status, response.read(), response.headers["X-Handled-By"]) == (200, b"thanks", "triggerd")


@pytest.mark.parametrize(
    ("content_type", "raw", "parsed"),
    [
        ("application/x-www-form-urlencoded", b"a=1&b=2&b=3&c=", {"a": "1", "b": ["2", "3"], "c": ""}),
        ("text/plain", b"plain text", "plain text"),
        ("application/octet-stream", b"\xff\xfe", None),
        ("application/cloudevents+json", b'{"x": [1]}', {"x": [1]}),
    ],
)
def test_bodies_by_content_type(daemon: Daemon, content_type: str, raw: bytes, parsed: Any) -> None:
    status, answer = http("POST", daemon.url + "/webhooks/raw?x=1&x=2", raw=raw, headers={"Content-Type": content_type})
    assert status == 202
    context = daemon.wait_run(answer["run_id"])["input"]["trigger_context"]
    assert context["body"] == parsed
    assert context["query"] == {"x": ["1", "2"]}
    assert (context["method"], context["path"], context["trigger"]) == (
        "POST",
        "/webhooks/raw",
        {"id": "raw", "name": None},
    )
    assert context["headers"]["content-type"] == content_type


@pytest.mark.parametrize("kind", list(AuthType))
def test_every_authentication_type_good_bad_rotated_and_stale(daemon: Daemon, kind: AuthType) -> None:
    from datetime import UTC, datetime, timedelta

    path = f"/webhooks/auth-{kind.value}"
    body = b'{"n": 1}'
    for secret in (NEW, OLD):
        headers = signed(kind, secret, body, datetime.now(UTC), message_id=f"msg_{secret[-8:]}")
        status, answer = post(daemon, path, body, headers)
        assert status == 202, (secret, answer)
    assert post(daemon, path, body, signed(kind, "whsec_d3Jvbmctc2VjcmV0LTAwMDA=", body, datetime.now(UTC))) == (
        401,
        {"error": "authentication failed"},
    )
    assert post(daemon, path, body)[0] == 401
    if kind in (AuthType.SLACK, AuthType.STRIPE, AuthType.STANDARD_WEBHOOKS):
        stale = signed(kind, NEW, body, datetime.now(UTC) - timedelta(minutes=10))
        assert post(daemon, path, body, stale)[0] == 401


def test_provider_delivery_ids_are_the_default_idempotency_keys(stored: Daemon) -> None:
    from datetime import UTC, datetime

    body = b'{"n": 2}'
    first = signed(AuthType.STANDARD_WEBHOOKS, NEW, body, datetime.now(UTC), message_id="msg_same")
    run_id = post(stored, "/webhooks/auth-standard-webhooks", body, first)[1]["run_id"]
    again = post(stored, "/webhooks/auth-standard-webhooks", body, first)
    assert again == (200, {"run_id": run_id, "trigger_id": "auth-standard-webhooks", "duplicate": True})
    github = {**signed(AuthType.GITHUB, NEW, body), "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    run_id = post(stored, "/webhooks/auth-github", body, github)[1]["run_id"]
    assert post(stored, "/webhooks/auth-github", body, github)[1] == {
        "run_id": run_id,
        "trigger_id": "auth-github",
        "duplicate": True,
    }
    assert stored.run(run_id)["idempotency_key"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_max_event_age_drops_old_deliveries(daemon: Daemon) -> None:
    from datetime import UTC, datetime, timedelta

    body = b"{}"
    old = signed(AuthType.SLACK, NEW, body, datetime.now(UTC) - timedelta(minutes=5))
    assert post(daemon, "/webhooks/fresh-only", body, old) == (
        200,
        {"status": "dropped", "reason": "max_event_age", "trigger_id": "fresh-only"},
    )
    assert post(daemon, "/webhooks/fresh-only", body, signed(AuthType.SLACK, NEW, body, datetime.now(UTC)))[0] == 202


def test_no_secret_reaches_the_log(daemon: Daemon) -> None:
    log = daemon.log.read_text()
    assert NEW not in log
    assert OLD not in log
    assert "authentication failed" in log


def test_draining_answers_503(tmp_path: Path) -> None:
    defs = (
        f"agent:\n  id: slow\n  type: command\n  command: [{PY}, -c, 'import time; time.sleep(3)']\n---\n"
        "trigger:\n  id: hook\n  type: webhook\n  webhook: {}\n  agent: {id: slow}\n  max_concurrent: 5\n"
    )
    with running_daemon(tmp_path, defs, "limits:\n  shutdown_grace_seconds: 10\n") as daemon:
        run_id = post(daemon, "/webhooks/hook")[1]["run_id"]
        daemon.wait_run(run_id, {"running"})
        daemon.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        status = wait_for(lambda: (s := post(daemon, "/webhooks/hook")[0]) == 503 and s, timeout=5)
        assert status == 503
        assert daemon.process.wait(15) == 0  # type: ignore[union-attr]
        daemon.start()
        assert daemon.wait_run(run_id)["status"] == "completed"  # the run in flight finished within the grace


@pytest.mark.parametrize(
    ("path", "header", "signature"),
    [
        ("/webhooks/preset-github", "X-Hub-Signature-256", lambda body: "sha256=" + _mac(NEW, body, "sha256")),
        ("/webhooks/preset-github-sha1", "X-Hub-Signature", lambda body: "sha1=" + _mac(NEW, body, "sha1")),
    ],
)
def test_generic_hmac_on_githubs_headers_is_githubs_scheme_delivery_id_included(
    daemon: Daemon, path: str, header: str, signature: Any
) -> None:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    delivery = f"delivery-{header}"
    headers = {header: signature(body), "X-GitHub-Event": "ping", "X-GitHub-Delivery": delivery}
    status, answer = post(daemon, path, body, headers)
    assert status == 202, answer
    assert post(daemon, path, body, headers) == (
        200,
        {"run_id": answer["run_id"], "trigger_id": answer["trigger_id"], "duplicate": True},
    )
    assert daemon.run(answer["run_id"])["idempotency_key"] == delivery
    assert post(daemon, path, body, {**headers, header: signature(body + b" ")})[0] == 401
    assert post(daemon, path, body, {**headers, header: _mac(NEW, body, "sha256")})[0] == 401  # no prefix


def _mac(secret: str, message: bytes, algorithm: str) -> str:
    return hmac.new(secret.encode(), message, algorithm).hexdigest()


def slack_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Signed exactly as Slack documents it (api.slack.com/authentication/verifying-requests-from-slack)."""
    basestring = b"v0:" + str(timestamp).encode() + b":" + body
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest(),
    }


def test_the_compat_slack_command_handler_accepts_a_request_signed_by_slack(tmp_path: Path) -> None:
    port = write_config(tmp_path, "")
    (tmp_path / "defs" / "all.yaml").unlink()
    for name in ("agents.yaml", "slack-command-handler.yaml"):
        shutil.copy(FIXTURES / "compat" / name, tmp_path / "defs" / name)
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    daemon = Daemon(tmp_path, port, {"PATH": os.environ["PATH"], "SLACK_WEBHOOK_SECRET": secret})
    daemon.log.touch()
    daemon.start(ready=False)
    url = daemon.url + "/webhooks/slack/commands"
    form = urlencode(
        {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": "T0001",
            "team_domain": "example",
            "channel_id": "C2147483705",
            "user_id": "U2147483697",
            "command": "/deploy",
            "text": "api to production",
            "response_url": "https://hooks.slack.com/commands/1234/5678",
        }
    ).encode()
    try:
        wait_for(lambda: _ready(daemon), timeout=20)
        now = int(time.time())
        status, answer = http("POST", url, raw=form, headers=slack_headers(secret, form, now))
        assert status == 202, answer
        run = daemon.wait_run(answer["run_id"])
        stale = http("POST", url, raw=form, headers=slack_headers(secret, form, now - 301))
        wrong_secret = http("POST", url, raw=form, headers=slack_headers("another-secret", form, now))
        tampered = http("POST", url, raw=form + b"&x=1", headers=slack_headers(secret, form, now))
        plain = {  # the plain HMAC of the body that generic hmac used to expect: not Slack's scheme
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Signature": hmac.new(secret.encode(), form, hashlib.sha256).hexdigest(),
        }
        unsigned_scheme = http("POST", url, raw=form, headers=plain)
    finally:
        daemon.stop()
    assert run["input"] == {"text": "api to production", "user_id": "U2147483697", "channel": "C2147483705"}
    assert (run["status"], run["output"]) == ("completed", {"reply": run["input"]})
    assert [r[0] for r in (stale, wrong_secret, tampered, unsigned_scheme)] == [401, 401, 401, 401]


def _ready(daemon: Daemon) -> bool:
    try:
        return http("GET", daemon.url + "/readyz")[0] == 200
    except OSError:
        time.sleep(0.05)
        return False


def test_every_log_line_about_a_run_names_the_run_trigger_and_agent(daemon: Daemon) -> None:
    lines = daemon.log_lines()
    about_runs = [line for line in lines if "run_id" in line]
    assert len(about_runs) > 20
    assert all(line.get("trigger_id") and line.get("agent_id") for line in about_runs), [
        line for line in about_runs if not (line.get("trigger_id") and line.get("agent_id"))
    ][:3]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)
