"""The `source` document (SPEC 5.4, 2.2, 6): schema, loading with line marks, validation, `triggerd
list`, `triggerd test --message`, and the mapping from a message to an event."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import AGENT, Write, found, load_dir
from triggerd.config.documents import read_documents
from triggerd.config.sources import build_source
from triggerd.sources.brokers.abc import Message, display_url
from triggerd.sources.brokers.convert import Poison, decode_body, message_context, to_event
from triggerd.sources.brokers.runner import scrub

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

GOOD = """\
source:
  id: orders
  type: redis-stream
  url: "redis://localhost:6379/0"
  stream: orders
  event:
    type: $.body.kind
    id: $.body.id
    severity: $.headers.level
    data: $.body.order
  dedupe_window: 1h
"""


def cli(*args: str, cwd: Path | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`triggerd ARGS` in a fresh interpreter; `prelude` runs first (to hide a package, say)."""
    code = f"{prelude}\nimport sys\nfrom triggerd.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_a_source_loads_with_its_options_and_defaults(write: Write, tmp_path: Path) -> None:
    write("orders.yaml", GOOD)
    result = load_dir(tmp_path)
    assert found(result) == []
    assert result.configuration is not None
    source = result.configuration.sources["orders"]
    assert (source.type, source.max_in_flight, source.dedupe_window, source.enabled) == ("redis-stream", 16, 3600, True)
    assert dict(source.options) == {
        "stream": "orders",
        "group": "triggerd",
        "start": "$",
        "field": "body",
        "claim_idle": 300.0,
    }
    assert source.origin.line == 1
    assert "redis://" not in repr(source)  # the URL (credentials) is a Secret


def test_validation_problems_are_located(write: Write, tmp_path: Path) -> None:
    path = str(
        write(
            "bad.yaml",
            """\
            source:
              id: orders
              type: redis-streams
              url: "redis://localhost/0"
            ---
            source:
              id: tasks
              type: redis-list
              url: "redis://localhost/0"
            ---
            source:
              id: feed
              type: redis-stream
              url: "redis://localhost/0"
              stream: s
              event:
                type: "$.body[?(@.x ==]"
            ---
            source:
              id: feed
              type: redis-stream
              url: "http://localhost/0"
              stream: s2
            ---
            trigger:
              id: t
              type: event
              event: {pattern: "x.*", source: [fed, "svc-*", system, /re/]}
              agent: {id: worker}
            """,
        )
    )
    write("agent.yaml", AGENT)
    assert found(load_dir(tmp_path)) == [
        (path, 3, "error", "'redis-streams' is not one of: redis-stream, redis-list, amqp, nats, sse"),
        (path, 7, "error", "missing required key 'list'"),
        (path, 17, "error", "JSONPath '$.body[?(@.x ==]' does not compile: Parse error at 1:15 near token ] (])"),
        (path, 20, "error", f"duplicate source id 'feed' (also defined at {path}:11)"),
        (path, 22, "error", "a redis-stream source's url starts with redis:// or rediss:// or unix:// (got http://)"),
        (
            path,
            28,
            "warning",
            "event.source 'fed' names no source and no producer triggerd knows (system, agents, api, cli); "
            "did you mean 'feed'?",
        ),
    ]


def test_a_url_from_an_unset_variable_is_only_the_variables_warning(write: Write, tmp_path: Path) -> None:
    path = str(write("orders.yaml", GOOD.replace('"redis://localhost:6379/0"', '"${REDIS_URL}"')))
    assert found(load_dir(tmp_path)) == [(path, 4, "warning", "environment variable REDIS_URL is not set")]
    assert found(load_dir(tmp_path, {"REDIS_URL": "http://x"})) == [
        (path, 4, "error", "a redis-stream source's url starts with redis:// or rediss:// or unix:// (got http://)")
    ]


def test_a_missing_queues_extra_is_a_validation_error_naming_it(write: Write, tmp_path: Path) -> None:
    write("orders.yaml", GOOD)
    hide = "import sys; sys.modules['redis'] = None; sys.modules['redis.asyncio'] = None"
    proc = cli("validate", str(tmp_path), prelude=hide)
    assert proc.returncode == 1
    assert (
        f"{tmp_path}/orders.yaml:3:9: error: source type 'redis-stream' needs the Python package(s) redis, "
        "which the [queues] extra installs: pip install 'triggerd[queues]' (at /source/type)"
    ) in proc.stdout


def test_schema_source_is_printed() -> None:
    proc = cli("schema", "source")
    schema = json.loads(proc.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    types = schema["$defs"]["source"]["properties"]["type"]["enum"]
    assert types == ["redis-stream", "redis-list", "amqp", "nats", "sse"]


def test_list_shows_sources(write: Write, tmp_path: Path) -> None:
    write("defs/orders.yaml", GOOD.replace("localhost:6379", "user:hunter2hunter2@localhost:6379"))
    (tmp_path / "triggerd.yaml").write_text("definitions: [defs]\n")
    text = cli("list", "--config", "triggerd.yaml", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-2:] == [
        "SOURCE  TYPE          ENABLED  CONSUMES",
        "orders  redis-stream  yes      orders",
    ]
    rows = json.loads(cli("list", "--config", "triggerd.yaml", "--format", "json", cwd=tmp_path).stdout)
    assert rows == [{"id": "orders", "kind": "source", "type": "redis-stream", "enabled": True, "target": "orders"}]


QUEUE = f"""\
{GOOD}
---
{AGENT}
---
trigger:
  id: on-order
  type: event
  event: {{pattern: "order.*", source: orders}}
  agent: {{id: worker, input_mapping: {{sku: $.event.data.sku}}}}
"""


def test_test_message_shows_the_event_and_the_run(write: Write, tmp_path: Path) -> None:
    write("defs.yaml", QUEUE)
    (tmp_path / "good.json").write_text('{"kind": "order.created", "id": 7, "order": {"sku": "A-1"}}')
    proc = cli("test", "on-order", str(tmp_path), "--message", str(tmp_path / "good.json"), "--source", "orders")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"type": "order.created"' in proc.stdout and '"id": "7"' in proc.stdout
    assert "event:orders:7" in proc.stdout  # the runs' idempotency key
    assert '"sku": "A-1"' in proc.stdout
    (tmp_path / "bad.txt").write_text("not json")
    proc = cli("test", "on-order", str(tmp_path), "--message", str(tmp_path / "bad.txt"), "--source", "orders")
    assert proc.returncode == 1
    poison = "event.type: $.body.kind matched nothing in the message (the body is not JSON)"
    assert f"dead letter     {poison}: the daemon stores the message as a dead letter" in proc.stdout
    proc = cli("test", "on-order", str(tmp_path), "--message", str(tmp_path / "bad.txt"), "--source", "nope")
    assert proc.returncode == 2
    assert "no source 'nope' is loaded (sources: orders)" in proc.stderr


def _source(text: str = GOOD):  # type: ignore[no-untyped-def]
    docs, problems = read_documents(Path("s.yaml"), "s.yaml", {}, data=text.encode())
    assert not problems
    source = build_source(docs[0], "orders")
    assert source is not None, docs[0].problems
    return source


def message(body: bytes, **headers: str) -> Message:
    return Message("1700000000000-0", body, headers, "2023-11-14T22:13:20.000Z", {"stream": "orders"})


def test_the_message_context() -> None:
    assert decode_body(b'{"a": 1}') == {"a": 1}
    assert decode_body(b"plain") == "plain"
    assert decode_body(b"\xff\xfe") is None
    assert message_context(message(b"[1]", trace="x"), NOW) == {
        "body": [1],
        "headers": {"trace": "x"},
        "id": "1700000000000-0",
        "stream": "orders",
        "received_at": "2026-03-01T12:00:00.000Z",
    }


def test_the_event_mapping_and_its_defaults() -> None:
    event = to_event(_source(), message(b'{"kind": "order.paid", "id": 42, "order": {"sku": "B"}}', level="HIGH"), NOW)
    assert event.to_json() == {
        "id": "42",
        "type": "order.paid",
        "source": "orders",
        "time": "2023-11-14T22:13:20.000Z",
        "data": {"sku": "B"},
        "severity": "high",
    }
    assert event.dedupe_seconds == 3600
    plain = _source(GOOD.split("  event:")[0])
    event = to_event(plain, message(b"hello"), NOW)
    assert (event.type, event.id, event.data, event.severity) == ("orders.message", "1700000000000-0", "hello", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "event.type: $.body.kind matched nothing in the message (the body is not JSON)"),
        (b'{"kind": "x", "id": 1}', "event.data: $.body.order matched nothing in the message"),
        (b'{"kind": 5, "id": 1, "order": 1}', "the mapped event: 'type' is required and must be a non-empty string"),
        (b'{"kind": "x", "id": {"a": 1}, "order": 1}', 'event.id must give a non-empty string, got {"a": 1}'),
    ],
)
def test_a_message_that_cannot_become_an_event_is_poison(body: bytes, reason: str) -> None:
    with pytest.raises(Poison) as caught:
        to_event(_source(), message(body, level="low"), NOW)
    assert str(caught.value) == reason


def test_a_urls_password_never_shows() -> None:
    url = "redis://worker:s3cret-pass@cache.internal:6380/2"
    assert display_url(url) == "redis://cache.internal:6380/2"
    assert scrub(f"cannot reach {url}; auth s3cret-pass refused", url) == (
        "cannot reach redis://cache.internal:6380/2; auth *** refused"
    )
