"""No request stalls the daemon (SPEC 4, last paragraph): RE2 patterns, bounded JSONPath, over HTTP."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT, Write
from tests.harness import Daemon, running_daemon
from tests.test_cli import triggerd

DEFINITIONS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: redos
  type: webhook
  webhook:
    endpoint: /redos
    filter: {field: "$.body.x", operator: matches, value: "^(a+)+$"}
  agent: {id: echo}
---
trigger:
  id: catastrophic
  type: event
  event: {pattern: "/^(a+)+$/"}
  agent: {id: echo}
---
trigger:
  id: names
  name: Names
  type: webhook
  webhook: {endpoint: /names}
  agent:
    id: echo
    input_mapping: {names: "$..name"}
---
trigger:
  id: keyed
  type: webhook
  webhook: {endpoint: /keyed}
  idempotency_key: "$..id"
  agent: {id: echo}
---
trigger:
  id: filtered
  type: webhook
  webhook:
    endpoint: /filtered
    filter: {field: "$..kind", operator: ne, value: noise}
  agent: {id: echo}
---
trigger:
  id: event-names
  type: event
  event: {pattern: "inventory.*"}
  agent:
    id: echo
    input_mapping: {names: "$..name"}
"""

# 29 bytes that take Python's re 15 s against ^(a+)+$; RE2 answers in microseconds.
EVIL = "a" * 28 + "b"
CLIENT_TIMEOUT = 5.0  # on the code before RE2 each of these requests took 15 s


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("bounded"), DEFINITIONS) as running:
        yield running


def timed(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[float, int, Any]:
    """(seconds, status, answer) of one request, measured on the client, with a short timeout."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        daemon.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    return time.perf_counter() - started, status, json.loads(payload) if payload else None


def test_a_redos_body_is_answered_at_once_and_healthz_keeps_answering(daemon: Daemon) -> None:
    seconds, status, answer = timed(daemon, "POST", "/redos", {"x": EVIL})
    assert (status, answer) == (200, {"status": "filtered", "trigger_id": "redos"})
    assert timed(daemon, "POST", "/redos", {"x": "aaaa"})[1] == 202  # the pattern still matches what it should

    attacks: list[float] = []
    failures: list[BaseException] = []

    def attack() -> None:
        try:
            for _ in range(5):
                attacks.append(timed(daemon, "POST", "/redos", {"x": EVIL})[0])
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for thread in threads:
        thread.start()
    health: list[float] = []
    while any(thread.is_alive() for thread in threads) or not health:
        seconds, status, _ = timed(daemon, "GET", "/healthz")
        assert status == 200
        health.append(seconds)
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT * 5)
    assert not failures, failures
    assert len(attacks) == 20
    # Medians, so that a scheduling hiccup on a loaded machine does not decide the verdict.
    assert statistics.median(attacks) < 0.1, attacks
    assert max(attacks) < 1.0, attacks
    assert statistics.median(health) < 0.1, health
    assert max(health) < 1.0, health


def test_a_catastrophic_event_pattern_runs_in_linear_time(daemon: Daemon) -> None:
    seconds, status, answer = timed(daemon, "POST", "/v1/events", {"type": EVIL, "source": "test"})
    assert status == 202, answer
    assert answer["matched"] == []
    assert seconds < 1.0
    status, answer = timed(daemon, "POST", "/v1/events", {"type": "aaaa", "source": "test"})[1:]
    assert (status, answer["matched"]) == (202, ["catastrophic"])


@pytest.mark.parametrize(
    ("endpoint", "path"), [("/names", "$..name"), ("/keyed", "$..id"), ("/filtered", "$..kind")]
)  # an input mapping, an idempotency key, a filter
def test_recursive_descent_on_a_large_body_is_refused_with_422_naming_the_path(
    daemon: Daemon, endpoint: str, path: str
) -> None:
    # ~165,000 nodes in about 400 KB: jsonpath-ng walked all of them on the event loop (about 1 s).
    large = {"items": [{"name": i, "v": [0] * 8} for i in range(15_000)]}
    seconds, status, answer = timed(daemon, "POST", endpoint, large)
    assert status == 422, answer
    assert answer == {"error": f"JSONPath {path} would visit more than 100,000 nodes of this context", "path": path}
    assert seconds < 1.0


def test_recursive_descent_on_a_large_event_does_not_fire_and_says_why(daemon: Daemon) -> None:
    large = {"type": "inventory.synced", "source": "test", "data": [{"name": i, "v": [0] * 8} for i in range(15_000)]}
    seconds, status, answer = timed(daemon, "POST", "/v1/events", large)
    assert status == 202, answer
    assert (answer["matched"], answer["run_ids"]) == (["event-names"], [])
    assert seconds < 1.0
    logged = [line for line in daemon.log_lines() if line.get("event_id") == answer["event_ids"][0]]
    assert [line["message"] for line in logged] == [
        "event did not fire: JSONPath $..name would visit more than 100,000 nodes of this context"
    ]
    small = {"type": "inventory.synced", "source": "test", "data": [{"name": "bolt"}]}
    status, answer = timed(daemon, "POST", "/v1/events", small)[1:]
    assert len(answer["run_ids"]) == 1
    names = daemon.wait_run(answer["run_ids"][0])["input"]["names"]
    assert names == ["bolt", "bolt", None]  # from $.event, $.events[0] and the unnamed trigger


def test_recursive_descent_on_a_small_body_maps_as_before(daemon: Daemon) -> None:
    body = {"user": {"name": "ada"}, "repos": [{"name": "triggerd", "owner": {"name": "ada"}}]}
    status, answer = timed(daemon, "POST", "/names", body)[1:]
    assert status == 202, answer
    run = daemon.wait_run(answer["run_id"])
    assert run["input"] == {"names": ["ada", "triggerd", "ada", "Names"]}  # the last from the context's trigger


@pytest.mark.parametrize(
    ("pattern", "line", "message"),
    [
        (
            "/(a)\\\\1/",
            5,
            "regular expression '/(a)\\\\1/' does not compile: invalid escape sequence: \\1 "
            "(backreferences are not supported by RE2)",
        ),
        (
            "/a(?=b)/",
            5,
            "regular expression '/a(?=b)/' does not compile: invalid perl operator: (?= "
            "(lookahead is not supported by RE2)",
        ),
    ],
)
def test_validate_refuses_what_re2_cannot_run_at_its_line(
    write: Write, tmp_path: Path, pattern: str, line: int, message: str
) -> None:
    write("agents.yaml", AGENT)
    write("t.yaml", f'trigger:\n  id: t\n  type: event\n  event:\n    pattern: "{pattern}"\n  agent: {{id: worker}}\n')
    proc = triggerd("validate", "t.yaml", "agents.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.splitlines() == [f"t.yaml:{line}:14: error: {message} (at /trigger/event/pattern)"]


def test_triggerd_test_shows_a_path_past_the_bound_as_a_422(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    write(
        "t.yaml",
        "trigger:\n  id: t\n  type: webhook\n  webhook:\n    filter: {field: '$..name', operator: exists}\n"
        "  agent: {id: worker}\n",
    )
    write("triggerd.yaml", "definitions: [t.yaml, agents.yaml]\n")
    write("large.json", json.dumps({"items": [{"name": i, "v": [0] * 8} for i in range(15_000)]}))
    proc = triggerd("test", "t", "--payload", "large.json", "--config", "triggerd.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = "JSONPath $..name would visit more than 100,000 nodes of this context"
    assert proc.stdout.splitlines()[-2:] == [
        f"filter          {message}",
        f'answer          422 {{"error": "{message}", "path": "$..name"}}',
    ]
