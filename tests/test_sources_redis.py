"""Redis sources against a real redis-server and real daemons (SPEC 5.4): a message becomes a run,
a poison message a dead letter, a crash before the acknowledgement fires nothing twice, a broker
restart loses nothing, a reload restarts only the changed source, two daemons share a group."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness import Daemon, running_daemon, wait_for, write_config
from tests.servers import BrokerServer
from tests.test_fs_faults import fill, small_disk

PY = json.dumps(sys.executable)


@pytest.fixture
def keys() -> dict[str, str]:
    """A stream and a list of this test's own on the session's Redis."""
    tag = secrets.token_hex(4)
    return {"stream": f"orders-{tag}", "list": f"tasks-{tag}"}


@pytest.fixture
def client(redis_server: BrokerServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url, socket_timeout=10) as connection:
        yield connection


def definitions(url: str, keys: dict[str, str], *, claim_idle: str = "1s", list_extra: str = "") -> str:
    return f"""\
agent: {{id: echo, type: command, command: [cat]}}
---
source:
  id: orders
  type: redis-stream
  url: "{url}"
  stream: {keys["stream"]}
  start: "0"
  claim_idle: {claim_idle}
  event:
    type: $.body.type
    id: $.body.id
---
source:
  id: tasks
  type: redis-list
  url: "{url}"
  list: {keys["list"]}
  event:
    type: task.created
    id: $.body.id{list_extra}
---
trigger:
  id: on-order
  type: event
  event: {{pattern: "order.*", source: orders}}
  agent: {{id: echo, input_mapping: {{order: $.event.data.order, type: $.event.type}}}}
---
trigger:
  id: on-task
  type: event
  event: {{pattern: task.created, source: tasks}}
  agent: {{id: echo, input_mapping: {{task: $.event.data.task}}}}
"""


def push(client: redis.Redis, keys: dict[str, str], kind: str, body: bytes | str) -> None:
    """One message: an entry of the stream (field "body") or an LPUSH to the list."""
    if kind == "stream":
        client.xadd(keys["stream"], {"body": body, "trace": "t-1"})
    else:
        client.lpush(keys["list"], body)


def order(n: int) -> str:
    return json.dumps({"type": "order.created", "id": f"o-{n}", "order": n})


def task(n: int) -> str:
    return json.dumps({"id": f"t-{n}", "task": f"task {n}"})


SAMPLE = {"stream": order, "list": task}
TRIGGER = {"stream": "on-order", "list": "on-task"}
SOURCE = {"stream": "orders", "list": "tasks"}


def runs(daemon: Daemon, trigger: str) -> list[dict[str, Any]]:
    status, answer = daemon.request("GET", f"/v1/runs?trigger={trigger}&limit=100")
    assert status == 200, answer
    return list(answer["runs"])


def inputs(daemon: Daemon, trigger: str, count: int, timeout: float = 15) -> list[Any]:
    """The inputs of the trigger's runs once there are `count` of them (oldest first)."""
    found = wait_for(lambda: len(runs(daemon, trigger)) >= count or None, timeout, what=f"{count} runs of {trigger}")
    assert found
    return [r["input"] for r in reversed(runs(daemon, trigger))]


def source_state(daemon: Daemon, source_id: str) -> dict[str, Any]:
    status, answer = daemon.request("GET", "/v1/sources")
    assert status == 200, answer
    return next(s for s in answer["sources"] if s["id"] == source_id)


def consuming(daemon: Daemon, source_id: str, timeout: float = 15) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (state := source_state(daemon, source_id))["state"] == "consuming" and state,
            timeout,
            what=f"source {source_id} consuming",
        )
    )


@pytest.mark.parametrize("kind", ["stream", "list"])
def test_a_message_becomes_a_run_and_a_poison_message_a_dead_letter(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str], kind: str
) -> None:
    server = "  max_body_bytes: 100000\n"  # a message's bound too
    with running_daemon(tmp_path, definitions(redis_server.url, keys), server=server) as daemon:
        consuming(daemon, SOURCE[kind])
        push(client, keys, kind, SAMPLE[kind](1))
        push(client, keys, kind, b"\xff not json {")  # the mapping needs $.body.*: a poison message
        push(client, keys, kind, json.dumps({"type": "order.created", "id": "big", "task": "x" * 200_000}))
        push(client, keys, kind, SAMPLE[kind](2))
        got = inputs(daemon, TRIGGER[kind], 2)
        expected = {
            "stream": [{"order": 1, "type": "order.created"}, {"order": 2, "type": "order.created"}],
            "list": [{"task": "task 1"}, {"task": "task 2"}],
        }
        assert got == expected[kind]
        status, dead = daemon.request("GET", "/v1/dead-letters")
        assert status == 200
        big, message = sorted(dead["messages"], key=lambda m: len(m["payload"]), reverse=True)
        assert message["source_id"] == big["source_id"] == SOURCE[kind]
        assert "matched nothing" in message["reason"] and "not JSON" in message["reason"]
        assert message["payload"] == "\ufffd not json {"
        assert big["reason"].startswith("the message body is 200") and "more than the 100000 allowed" in big["reason"]
        assert len(big["payload"]) == 64 * 1024  # the raw payload, cut
        state = wait_for(lambda: (s := source_state(daemon, SOURCE[kind]))["messages"]["published"] == 2 and s)
        assert state["messages"] == {"published": 2, "duplicate": 0, "dead_letter": 2}
        assert state["in_flight"] == 0 and state["last_error"] is None
        assert state["target"] == keys[kind]
        metrics = daemon.request("GET", "/metrics")[1]
        assert f'triggerd_source_messages_total{{outcome="dead_letter",source="{SOURCE[kind]}"}} 2.0' in metrics
        assert f'triggerd_source_up{{source="{SOURCE[kind]}"}} 1.0' in metrics
    # Everything was acknowledged: nothing pending in the group, nothing left being processed.
    if kind == "stream":
        assert client.xpending(keys["stream"], "triggerd")["pending"] == 0
    else:
        assert client.llen(keys["list"] + ":processing") == 0


@pytest.mark.parametrize("forget", [False, True], ids=["recorded", "runs-only"])
@pytest.mark.parametrize("kind", ["stream", "list"])
def test_a_crash_after_the_commit_and_before_the_ack_fires_nothing_twice(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str], kind: str, forget: bool
) -> None:
    """The daemon's Redis user may not acknowledge (ACL), so every message stays unacknowledged
    after its run is committed; the daemon is SIGKILLed in that state, and a new one gets the
    redelivery (the processing list, or a claim of the dead consumer's pending entry).

    runs-only: the crash came after the runs were committed and before the event id was
    (the state such a crash leaves: no source_events row); the runs' idempotency key decides."""
    user, password = f"worker-{secrets.token_hex(3)}", secrets.token_hex(8)
    ack = "xack" if kind == "stream" else "lrem"
    client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", f"-{ack}"])
    url = redis_server.url.replace("redis://", f"redis://{user}:{password}@")
    with running_daemon(tmp_path, definitions(url, keys)) as daemon:
        push(client, keys, kind, SAMPLE[kind](1))
        assert len(inputs(daemon, TRIGGER[kind], 1)) == 1
        failing = wait_for(lambda: (s := source_state(daemon, SOURCE[kind]))["last_error"] and s)
        assert "NOPERM" in failing["last_error"] or "permission" in failing["last_error"].lower()
        assert password not in json.dumps(failing)  # the URL's password never shows
        daemon.stop(signal.SIGKILL)
        if kind == "stream":
            assert client.xpending(keys["stream"], "triggerd")["pending"] == 1
        else:
            assert client.llen(keys["list"] + ":processing") == 1
        assert password not in daemon.log.read_text()
        if forget:
            with sqlite3.connect(tmp_path / "state" / "triggerd.db") as db:
                assert db.execute("DELETE FROM source_events").rowcount == 1
        client.acl_setuser(user, enabled=True, commands=[f"+{ack}"])
        daemon.start()
        push(client, keys, kind, SAMPLE[kind](2))
        got = inputs(daemon, TRIGGER[kind], 2)
        assert len(got) == 2  # 1 once, then 2
        handled = "published" if forget else "duplicate"
        wait_for(lambda: source_state(daemon, SOURCE[kind])["messages"][handled] == 1 + forget, what="redelivery")
        assert len(runs(daemon, TRIGGER[kind])) == 2
    if kind == "stream":
        assert client.xpending(keys["stream"], "triggerd")["pending"] == 0
    else:
        assert client.llen(keys["list"] + ":processing") == 0


def test_a_poison_message_whose_ack_is_lost_is_one_dead_letter(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str]
) -> None:
    """The ack is refused (ACL) while the poison message goes round: stored, not acknowledged,
    redelivered after the reconnect, stored again; it is kept once, and acknowledged once allowed."""
    user, password = f"worker-{secrets.token_hex(3)}", secrets.token_hex(8)
    client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-lrem"])
    url = redis_server.url.replace("redis://", f"redis://{user}:{password}@")
    with running_daemon(tmp_path, definitions(url, keys)) as daemon:
        push(client, keys, "list", "poison")
        wait_for(lambda: source_state(daemon, "tasks")["last_error"], what="the refused ack")
        wait_for(lambda: daemon.log.read_text().count("is a dead letter") >= 2, what="the poison message twice")
        client.acl_setuser(user, enabled=True, commands=["+lrem"])
        wait_for(lambda: source_state(daemon, "tasks")["messages"]["dead_letter"] == 1, timeout=15, what="the ack")
        assert len(daemon.request("GET", "/v1/dead-letters")[1]["messages"]) == 1
    assert client.llen(keys["list"] + ":processing") == 0


def test_the_broker_stopped_and_restarted_mid_stream_loses_nothing(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str]
) -> None:
    with running_daemon(tmp_path, definitions(redis_server.url, keys)) as daemon:
        consuming(daemon, "orders")
        consuming(daemon, "tasks")
        for n in (1, 2):
            push(client, keys, "stream", order(n))
            push(client, keys, "list", task(n))
        inputs(daemon, "on-order", 2)
        inputs(daemon, "on-task", 2)
        push(client, keys, "stream", order(3))  # handled or not when the broker goes: once either way
        push(client, keys, "list", task(3))
        redis_server.stop()
        wait_for(lambda: source_state(daemon, "orders")["state"] == "down", what="orders down")
        wait_for(lambda: source_state(daemon, "tasks")["state"] == "down", what="tasks down")
        assert daemon.request("GET", "/readyz")[0] == 200  # a broker that is down never stops the daemon
        redis_server.start()
        with redis.Redis.from_url(redis_server.url, socket_timeout=10) as again:
            for n in (4, 5):
                push(again, keys, "stream", order(n))
                push(again, keys, "list", task(n))
        assert [i["order"] for i in inputs(daemon, "on-order", 5, timeout=30)] == [1, 2, 3, 4, 5]
        assert [i["task"] for i in inputs(daemon, "on-task", 5, timeout=30)] == [f"task {n}" for n in range(1, 6)]
        with redis.Redis.from_url(redis_server.url, socket_timeout=10) as again:
            wait_for(lambda: again.xpending(keys["stream"], "triggerd")["pending"] == 0, what="stream acks")
            wait_for(lambda: again.llen(keys["list"] + ":processing") == 0, what="list acks")
        assert len(runs(daemon, "on-order")) == len(runs(daemon, "on-task")) == 5


def test_a_reload_restarts_only_the_changed_source(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str]
) -> None:
    with running_daemon(tmp_path, definitions(redis_server.url, keys)) as daemon:
        orders = consuming(daemon, "orders")
        tasks = consuming(daemon, "tasks")
        changed = definitions(redis_server.url, keys, list_extra="\n  max_in_flight: 4")
        (tmp_path / "defs" / "all.yaml").write_text(changed)
        status, answer = daemon.request("POST", "/v1/reload")
        assert status == 200, answer
        restarted = wait_for(lambda: (s := source_state(daemon, "tasks"))["since"] != tasks["since"] and s)
        assert source_state(daemon, "orders")["since"] == orders["since"]  # never stopped
        assert restarted["messages"]["published"] == 0
        push(client, keys, "stream", order(1))
        push(client, keys, "list", task(1))
        assert inputs(daemon, "on-order", 1) == [{"order": 1, "type": "order.created"}]
        assert inputs(daemon, "on-task", 1) == [{"task": "task 1"}]
        reloaded = [line for line in daemon.log_lines() if line["message"].startswith("reloaded")]
        # The file watcher reloads too: whichever reload ran first applied the change, a later one none.
        assert "sources +0 -0 ~1" in reloaded[0]["message"]


def test_two_daemons_compete_in_one_group(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str]
) -> None:
    """Two daemons, one store each, one consumer group: each entry is handled by exactly one."""
    defs = definitions(redis_server.url, keys, claim_idle="5m")  # one store each: no claims between them
    first, second = tmp_path / "a", tmp_path / "b"
    daemons = [Daemon(root, write_config(root, defs), {"PATH": os.environ["PATH"]}) for root in (first, second)]
    try:
        for daemon in daemons:
            daemon.start()
            consuming(daemon, "orders")
        for n in range(40):
            push(client, keys, "stream", order(n))

        def handled() -> list[int]:
            return [r["input"]["order"] for d in daemons for r in runs(d, "on-order")]

        wait_for(lambda: len(handled()) >= 40, timeout=30, what="40 runs in all")
        assert sorted(handled()) == list(range(40))
        assert all(runs(d, "on-order") for d in daemons), "both consumers took a share"
        consumers = {c["name"] for c in client.xinfo_consumers(keys["stream"], "triggerd")}
        assert len(consumers) == 2
    finally:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.stop()


def test_while_the_store_refuses_writes_nothing_is_acknowledged(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str]
) -> None:
    """A full disk (a small tmpfs, filled): the source keeps the message unacknowledged, takes no
    other, and retries it; once space returns every message runs once and is acknowledged."""
    pad = "x" * 20_000  # a large input needs new pages, which a full disk cannot give
    with (
        small_disk(tmp_path / "state", "2m") as disk,
        running_daemon(tmp_path, definitions(redis_server.url, keys)) as daemon,
    ):
        consuming(daemon, "tasks")
        filler = fill(disk)
        for n in (1, 2, 3):
            push(client, keys, "list", json.dumps({"id": f"t-{n}", "task": f"{n}{pad}"}))
        paused = wait_for(lambda: (s := source_state(daemon, "tasks"))["last_error"] and s, what="the pause")
        assert "store refused the write" in paused["last_error"]
        assert paused["in_flight"] == 1
        assert client.llen(keys["list"] + ":processing") == 1  # taken, not acknowledged
        assert client.llen(keys["list"]) == 2  # the others wait on the broker
        filler.unlink()
        got = inputs(daemon, "on-task", 3, timeout=20)
        assert [i["task"][0] for i in got] == ["1", "2", "3"]
        wait_for(lambda: client.llen(keys["list"] + ":processing") == 0, what="every ack")
        assert source_state(daemon, "tasks")["messages"]["published"] == 3


def test_a_delivery_the_store_refuses_is_acknowledged_in_none_of_its_messages(
    tmp_path: Path, redis_server: BrokerServer, client: redis.Redis, keys: dict[str, str]
) -> None:
    """Five stream entries added in one transaction come as one delivery (one XREADGROUP), handled
    as one batch. While the store refuses writes (a full disk) none of the five is acknowledged,
    the delivery is retried whole, and no other is read; once space returns, every entry has its
    one run, in stream order, and all are acknowledged."""
    pad = "x" * 20_000  # large inputs need new pages, which a full disk cannot give
    with (
        small_disk(tmp_path / "state", "2m") as disk,
        running_daemon(tmp_path, definitions(redis_server.url, keys)) as daemon,
    ):
        consuming(daemon, "orders")
        filler = fill(disk)
        entries = [order(n) for n in range(1, 6)]
        with client.pipeline(transaction=True) as pipe:  # served to the blocked reader after EXEC, together
            for entry in entries:
                pipe.xadd(keys["stream"], {"body": entry.replace('"order"', f'"pad": "{pad}", "order"')})
            pipe.execute()
        paused = wait_for(lambda: (s := source_state(daemon, "orders"))["last_error"] and s, what="the pause")
        assert "store refused the write" in paused["last_error"]
        assert paused["in_flight"] == 5  # the delivery, as one batch
        push(client, keys, "stream", order(6))  # waits on the broker: no delivery is taken meanwhile
        pending = client.xpending(keys["stream"], "triggerd")
        assert pending["pending"] == 5  # delivered, and not one of them acknowledged
        assert runs(daemon, "on-order") == []
        filler.unlink()
        got = inputs(daemon, "on-order", 6, timeout=20)
        assert [i["order"] for i in got] == [1, 2, 3, 4, 5, 6]
        wait_for(lambda: client.xpending(keys["stream"], "triggerd")["pending"] == 0, what="every ack")
        state = wait_for(lambda: (s := source_state(daemon, "orders"))["messages"]["published"] == 6 and s)
        assert state["messages"] == {"published": 6, "duplicate": 0, "dead_letter": 0}
        assert len(runs(daemon, "on-order")) == 6
