"""amqp, nats and sse sources against a real RabbitMQ, a real NATS JetStream and a real aiohttp
event-stream server, with real daemons (SPEC 5.4): a message becomes a run, a poison message a
dead letter, a crash between the commit and the acknowledgement fires nothing twice, a broker
restart loses nothing, and a reload that changes one source leaves every other type consuming."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import nats
import pytest
import redis

from tests.ack_hold import AMQP_ACK, NATS_ACK, AckHold
from tests.conftest import Write, found, load_dir
from tests.harness import Daemon, running_daemon, wait_for, write_config
from tests.servers import BrokerServer
from tests.sse_server import SseServer
from tests.test_fs_faults import fill, small_disk
from tests.test_sources_config import cli
from tests.test_sources_redis import consuming, inputs, runs, source_state

STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SOURCE = {"amqp": "jobs", "nats": "orders", "sse": "feed"}


class Amqp:
    """A producer on the session's RabbitMQ, with a queue of this test's own."""

    def __init__(self, server: BrokerServer) -> None:
        self.url, self.broker = server.url, server
        self.queue = f"jobs-{secrets.token_hex(4)}"

    def source(self, url: str | None = None) -> str:
        return f'type: amqp\n  url: "{url or self.url}"\n  queue: {self.queue}'

    async def _publish(self, body: bytes, message_id: str | None) -> None:
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            message = aio_pika.Message(
                body,
                timestamp=STAMP,
                headers={"trace": "t-1"},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
            )
            await channel.default_exchange.publish(message, routing_key=self.queue)

    def publish(self, body: str | bytes, message_id: str | None = None) -> None:
        asyncio.run(self._publish(body.encode() if isinstance(body, str) else body, message_id))

    async def _ready(self) -> int:
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            queue = await (await connection.channel()).declare_queue(self.queue, passive=True)
            return int(queue.declaration_result.message_count or 0)

    def waiting(self) -> int:
        """Messages ready in the queue (a dead consumer's unacknowledged ones come back here)."""
        return asyncio.run(self._ready())


class Nats:
    """A producer on the session's NATS, with a JetStream stream of this test's own."""

    def __init__(self, server: BrokerServer) -> None:
        self.url, self.broker = server.url, server
        tag = secrets.token_hex(4)
        self.stream, self.prefix = f"ORDERS_{tag}", f"orders{tag}"
        asyncio.run(self._call(lambda js: js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])))

    def source(self, url: str | None = None) -> str:
        return (
            f'type: nats\n  url: "{url or self.url}"\n  stream: {self.stream}\n'
            f'  subject: "{self.prefix}.>"\n  ack_wait: 2s'
        )

    async def _call(self, action: Any) -> Any:
        client = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
        try:
            return await action(client.jetstream())
        finally:
            await client.close()

    def publish(self, body: str | bytes, message_id: str | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        headers = {"trace": "t-1", **({"Nats-Msg-Id": message_id} if message_id else {})}
        asyncio.run(self._call(lambda js: js.publish(f"{self.prefix}.eu", data, headers=headers)))

    def waiting(self) -> int:
        """Messages delivered to the durable and not acknowledged."""
        info = asyncio.run(self._call(lambda js: js.consumer_info(self.stream, "triggerd")))
        return int(info.num_ack_pending)


class Sse:
    """The test's own event-stream server; each message an event with an id of its own."""

    def __init__(self) -> None:
        self.server = self.broker = SseServer()
        self.url = self.server.url
        self.count = 0

    def source(self, url: str | None = None) -> str:
        return f'type: sse\n  url: "{url or self.url}"\n  headers: {{X-Token: t-1}}'

    def publish(self, body: str | bytes) -> None:
        self.count += 1
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        self.server.push(text, event_id=str(self.count), kind="update")


Producer = Amqp | Nats | Sse


@pytest.fixture
def producer(request: pytest.FixtureRequest) -> Iterator[Producer]:
    kind = request.param
    if kind == "amqp":
        yield Amqp(request.getfixturevalue("rabbitmq_server"))
    elif kind == "nats":
        yield Nats(request.getfixturevalue("nats_server"))
    else:
        sse = Sse()
        yield sse
        sse.server.close()


def kind_of(producer: Producer) -> str:
    return {Amqp: "amqp", Nats: "nats", Sse: "sse"}[type(producer)]


def definitions(*sources: tuple[str, str], mapped_id: bool = True) -> str:
    """The echo agent, and for each (source id, its type's lines) the source and a trigger on it.
    mapped_id: the event id is the body's `id`; else the broker's message id."""
    docs = ["agent: {id: echo, type: command, command: [cat]}"]
    for source_id, lines in sources:
        mapping = "\n    id: $.body.id" if mapped_id else ""
        docs.append(f"source:\n  id: {source_id}\n  {lines}\n  event:\n    type: $.body.type{mapping}")
        docs.append(
            f"trigger:\n  id: on-{source_id}\n  type: event\n  event: {{pattern: 'job.*', source: {source_id}}}\n"
            "  agent: {id: echo, input_mapping: {n: $.event.data.n, time: $.event.time}}"
        )
    return "\n---\n".join(docs) + "\n"


def job(n: int) -> str:
    return json.dumps({"type": "job.created", "id": f"j-{n}", "n": n})


def numbers(daemon: Daemon, source_id: str, count: int, timeout: float = 15) -> list[int]:
    return [i["n"] for i in inputs(daemon, f"on-{source_id}", count, timeout)]


@pytest.mark.parametrize("producer", ["amqp", "nats", "sse"], indirect=True)
def test_a_message_becomes_a_run_and_a_poison_message_a_dead_letter(tmp_path: Path, producer: Producer) -> None:
    kind = kind_of(producer)
    source_id = SOURCE[kind]
    with running_daemon(tmp_path, definitions((source_id, producer.source()))) as daemon:
        consuming(daemon, source_id)
        producer.publish(job(1))
        producer.publish(b"\xff not json {")  # the mapping needs $.body.*: a poison message
        producer.publish(job(2))
        got = inputs(daemon, f"on-{source_id}", 2)
        assert [i["n"] for i in got] == [1, 2]
        if kind == "amqp":  # the message's timestamp property is the event's time
            assert got[0]["time"] == "2026-01-02T03:04:05.000Z"
        status, dead = daemon.request("GET", "/v1/dead-letters")
        assert status == 200
        (message,) = dead["messages"]
        assert message["source_id"] == source_id
        assert "matched nothing" in message["reason"] and "not JSON" in message["reason"]
        assert message["payload"] == "\ufffd not json {"
        headers = {
            "amqp": {"trace": "t-1", "routing_key": getattr(producer, "queue", None), "delivery_mode": 2},
            "nats": {"trace": "t-1"},
            "sse": {"event": "update", "last_event_id": "2"},
        }[kind]
        assert {k: message["headers"].get(k) for k in headers} == headers
        # aio-pika's publisher gives every message a random message_id when none is set: the broker id
        poison_id = {"amqp": message["headers"].get("message_id"), "nats": "2", "sse": "2"}[kind]
        assert message["broker_id"] == poison_id and poison_id  # the message_id, the stream sequence, the id
        state = wait_for(lambda: (s := source_state(daemon, source_id))["messages"]["published"] == 2 and s)
        assert state["messages"] == {"published": 2, "duplicate": 0, "dead_letter": 1}
        assert state["in_flight"] == 0 and state["last_error"] is None
        if kind != "sse":  # polled every 5 s from the start; an event stream reports none
            wait_for(lambda: source_state(daemon, source_id)["lag"] == 0, timeout=12, what="lag 0")
        else:
            assert state["lag"] is None
        if not isinstance(producer, Sse):
            wait_for(lambda: producer.waiting() == 0, what="every message acknowledged")
    if isinstance(producer, Sse):  # the definition's headers are sent; acknowledged = the last id saved
        assert producer.server.request_headers[0]["X-Token"] == "t-1"
        assert producer.server.request_headers[0]["Accept"] == "text/event-stream"
        with sqlite3.connect(tmp_path / "state" / "triggerd.db") as db:
            assert db.execute("SELECT cursor FROM source_cursors").fetchall() == [("3",)]


@pytest.mark.parametrize("mapped_id", [True, False], ids=["body-id", "broker-id"])
@pytest.mark.parametrize("producer", ["amqp", "nats"], indirect=True)
def test_a_crash_after_the_commit_and_before_the_ack_fires_nothing_twice(
    tmp_path: Path, producer: Amqp | Nats, mapped_id: bool
) -> None:
    """The daemon talks to the broker through a relay that drops its first acknowledgement and
    everything after it; the daemon is SIGKILLed once the run is committed and the ack withheld,
    and the next daemon gets the redelivery (RabbitMQ requeues, JetStream redelivers after ack_wait).

    broker-id: no event.id, so the redelivery is recognised by the broker's id (the AMQP
    message_id property, the JetStream stream sequence)."""
    kind = kind_of(producer)
    source_id = SOURCE[kind]
    port = int(producer.url.rsplit(":", 1)[1].strip("/"))
    hold = AckHold(port, AMQP_ACK if kind == "amqp" else NATS_ACK)
    relayed = producer.url.replace(f":{port}", f":{hold.listen_port}")
    try:
        defs = definitions((source_id, producer.source(relayed)), mapped_id=mapped_id)
        with running_daemon(tmp_path, defs) as daemon:
            consuming(daemon, source_id)
            producer.publish(job(1), message_id="m-1" if kind == "amqp" and not mapped_id else None)
            assert numbers(daemon, source_id, 1) == [1]
            assert hold.held.wait(15), "the daemon acknowledged nothing"
            daemon.stop(signal.SIGKILL)
            if kind == "amqp":
                wait_for(lambda: producer.waiting() == 1, what="the message requeued")
            else:
                assert producer.waiting() == 1
            hold.withhold = False
            daemon.start()
            producer.publish(job(2))
            assert numbers(daemon, source_id, 2) == [1, 2]  # 1 once, then 2
            wait_for(lambda: source_state(daemon, source_id)["messages"]["duplicate"] == 1, what="the redelivery")
            assert len(runs(daemon, f"on-{source_id}")) == 2
            wait_for(lambda: producer.waiting() == 0, what="every message acknowledged")
    finally:
        hold.close()


@pytest.mark.parametrize("producer", ["sse"], indirect=True)
def test_sse_resumes_after_a_crash_before_the_cursor_was_saved(tmp_path: Path, producer: Sse) -> None:
    """SSE's acknowledgement is saving the last event id; the state a SIGKILL between the commit
    of event 2 and that save leaves (the cursor still at 1) is set in the store of a killed
    daemon. The next daemon resumes with Last-Event-ID: 1, gets 2 again, and runs it once."""
    with running_daemon(tmp_path, definitions(("feed", producer.source()))) as daemon:
        consuming(daemon, "feed")
        producer.publish(job(1))
        producer.publish(job(2))
        assert numbers(daemon, "feed", 2) == [1, 2]
        database = tmp_path / "state" / "triggerd.db"

        def cursor() -> str | None:
            with sqlite3.connect(database) as db:
                row = db.execute("SELECT cursor FROM source_cursors WHERE source_id = 'feed'").fetchone()
                return row[0] if row else None

        wait_for(lambda: cursor() == "2", what="the cursor saved")
        daemon.stop(signal.SIGKILL)
        with sqlite3.connect(database) as db:
            db.execute("UPDATE source_cursors SET cursor = '1'")
        daemon.start()
        producer.publish(job(3))
        assert numbers(daemon, "feed", 3) == [1, 2, 3]
        wait_for(lambda: source_state(daemon, "feed")["messages"]["duplicate"] == 1, what="the repeated event")
        assert producer.server.resumed_from[-1] == "1"
        assert len(runs(daemon, "on-feed")) == 3
        wait_for(lambda: cursor() == "3", what="the cursor saved")


@pytest.mark.parametrize("producer", ["amqp", "nats", "sse"], indirect=True)
def test_the_broker_stopped_and_restarted_mid_stream_loses_nothing(tmp_path: Path, producer: Producer) -> None:
    kind = kind_of(producer)
    source_id = SOURCE[kind]
    with running_daemon(tmp_path, definitions((source_id, producer.source()))) as daemon:
        consuming(daemon, source_id)
        producer.publish(job(1))
        producer.publish(job(2))
        assert numbers(daemon, source_id, 2) == [1, 2]
        producer.publish(job(3))  # handled or not when the broker goes: once either way
        producer.broker.stop()
        wait_for(lambda: source_state(daemon, source_id)["state"] == "down", timeout=30, what="down")
        assert daemon.request("GET", "/readyz")[0] == 200  # a broker that is down never stops the daemon
        producer.broker.start()
        producer.publish(job(4))
        producer.publish(job(5))
        assert numbers(daemon, source_id, 5, timeout=60) == [1, 2, 3, 4, 5]
        if not isinstance(producer, Sse):
            wait_for(lambda: producer.waiting() == 0, timeout=30, what="every message acknowledged")
        assert len(runs(daemon, f"on-{source_id}")) == 5


def test_a_reload_that_changes_one_source_leaves_every_other_type_consuming(
    tmp_path: Path, rabbitmq_server: BrokerServer, nats_server: BrokerServer, redis_server: BrokerServer
) -> None:
    amqp, stream, sse = Amqp(rabbitmq_server), Nats(nats_server), Sse()
    tag = secrets.token_hex(4)
    redis_lines = {
        "log": f'type: redis-stream\n  url: "{redis_server.url}"\n  stream: log-{tag}\n  start: "0"',
        "todo": f'type: redis-list\n  url: "{redis_server.url}"\n  list: todo-{tag}',
    }
    sources = {"jobs": amqp.source(), "orders": stream.source(), "feed": sse.source(), **redis_lines}
    try:
        with (
            redis.Redis.from_url(redis_server.url, socket_timeout=10) as client,
            running_daemon(tmp_path, definitions(*sources.items())) as daemon,
        ):
            before = {source_id: consuming(daemon, source_id) for source_id in sources}
            sources["orders"] += "\n  max_in_flight: 4"
            (tmp_path / "defs" / "all.yaml").write_text(definitions(*sources.items()))
            status, answer = daemon.request("POST", "/v1/reload")
            assert status == 200, answer
            wait_for(lambda: source_state(daemon, "orders")["since"] != before["orders"]["since"], what="restart")
            consuming(daemon, "orders")
            for source_id, state in before.items():
                if source_id != "orders":
                    assert source_state(daemon, source_id)["since"] == state["since"], f"{source_id} was restarted"
            for producer in (amqp, stream, sse):
                producer.publish(job(1))
            client.xadd(f"log-{tag}", {"body": job(1)})
            client.lpush(f"todo-{tag}", job(1))
            for source_id in sources:
                assert numbers(daemon, source_id, 1) == [1], source_id
            reloaded = [line for line in daemon.log_lines() if line["message"].startswith("reloaded")]
            # the file watcher may reload before POST /v1/reload does: one of them restarted one source
            assert [line["message"].split("sources ")[1][:8] for line in reloaded] in (
                ["+0 -0 ~1"],
                ["+0 -0 ~1", "+0 -0 ~0"],
            )
    finally:
        sse.server.close()


def test_the_types_keys_are_validated_with_their_defaults(write: Write, tmp_path: Path) -> None:
    path = str(
        write(
            "brokers.yaml",
            """\
            source:
              id: jobs
              type: amqp
              url: "amqp://localhost/"
            ---
            source:
              id: orders
              type: nats
              url: "nats://localhost:4222"
              subject: "orders.>"
            ---
            source:
              id: feed
              type: sse
              url: "nats://localhost/events"
            ---
            source:
              id: ok
              type: nats
              url: "nats://localhost:4222"
              subject: "orders.>"
              stream: ORDERS
              ack_wait: 1m
            """,
        )
    )
    assert found(load_dir(tmp_path)) == [
        (path, 2, "error", "missing required key 'queue'"),
        (path, 7, "error", "missing required key 'stream'"),
        (path, 15, "error", "a sse source's url starts with http:// or https:// (got nats://)"),
    ]
    write("brokers.yaml", "source: {id: ok, type: nats, url: 'nats://h', subject: a.b, stream: S}\n")
    source = load_dir(tmp_path).configuration.sources["ok"]  # type: ignore[union-attr]
    assert dict(source.options) == {"subject": "a.b", "stream": "S", "durable": "triggerd", "ack_wait": 30}


@pytest.mark.parametrize(("kind", "package"), [("amqp", "aio_pika"), ("nats", "nats")])
def test_a_missing_client_is_a_validation_error_naming_the_extra(
    write: Write, tmp_path: Path, kind: str, package: str
) -> None:
    extra = {"amqp": "queue: q", "nats": "subject: a, stream: S"}[kind]
    write("s.yaml", f"source: {{id: s, type: {kind}, url: '{kind}://localhost', {extra}}}\n")
    proc = cli("validate", str(tmp_path), prelude=f"import sys; sys.modules[{package!r}] = None")
    assert proc.returncode == 1
    assert (
        f"error: source type '{kind}' needs the Python package(s) {package}, "
        "which the [queues] extra installs: pip install 'triggerd[queues]' (at /source/type)"
    ) in proc.stdout


def test_sse_parses_the_event_stream_format_honours_retry_and_cuts_a_huge_event(tmp_path: Path) -> None:
    """CR, LF and CRLF line ends, data on several lines, comments, an id without data (no event,
    but the last event id moves), an event without an id (its last event id inherited); then the
    server's `retry:` delays the reconnection after the server went away."""
    server = SseServer(retry_ms=2000)
    lines = 'type: sse\n  url: "' + server.url + '"'
    try:
        with running_daemon(tmp_path, definitions(("feed", lines))) as daemon:
            consuming(daemon, "feed")
            server.push_raw('id: a\revent: x\rdata: {"type": "job.created",\rdata:  "id": "j-1", "n": 1}\r\r', "a")
            server.push_raw(": keepalive\nid: b\n\n", "b")
            server.push_raw('data:{"type": "job.created", "id": "j-2", "n": 2}\r\n\r\n')
            assert numbers(daemon, "feed", 2) == [1, 2]
            with sqlite3.connect(tmp_path / "state" / "triggerd.db") as db:
                wait_for(lambda: db.execute("SELECT cursor FROM source_cursors").fetchall() == [("b",)], what="b")
            stopped = time.monotonic()
            server.stop()
            server.start()
            wait_for(lambda: len(server.requested_at) == 2, timeout=15, what="the reconnection")
            assert server.requested_at[1] - stopped >= 1.9  # retry: 2000, where the backoff starts at 0.5 s
            assert server.resumed_from == [None, "b"]
            server.push("{" + '"type": "job.created", "id": "j-3", "n": 3}', event_id="c")
            assert numbers(daemon, "feed", 3) == [1, 2, 3]
            server.push("x" * (17 * 1024 * 1024), event_id="d")  # cut at 16 MiB while read, then dead
            server.push(job(4), event_id="e")
            assert numbers(daemon, "feed", 4) == [1, 2, 3, 4]
            (dead,) = daemon.request("GET", "/v1/dead-letters")[1]["messages"]
            assert (
                "the message body is 16777210 bytes, more than the 1048576 allowed"
            )  # 16 MiB less "data: " in dead["reason"]
            assert dead["broker_id"] == "d"
    finally:
        server.close()


@pytest.mark.parametrize("producer", ["amqp", "nats"], indirect=True)
def test_two_daemons_are_competing_consumers(tmp_path: Path, producer: Amqp | Nats) -> None:
    """Two daemons, one store each, one queue or one durable: each message is handled by one."""
    source_id = SOURCE[kind_of(producer)]
    defs = definitions((source_id, producer.source() + "\n  max_in_flight: 2"))
    daemons = [
        Daemon(root, write_config(root, defs), {"PATH": os.environ["PATH"]})
        for root in (tmp_path / "a", tmp_path / "b")
    ]
    try:
        for daemon in daemons:
            daemon.start()
            consuming(daemon, source_id)
        for n in range(30):
            producer.publish(job(n))

        def handled() -> list[int]:
            return [r["input"]["n"] for d in daemons for r in runs(d, f"on-{source_id}")]

        wait_for(lambda: len(handled()) >= 30, timeout=30, what="30 runs in all")
        assert sorted(handled()) == list(range(30))
        assert all(runs(d, f"on-{source_id}") for d in daemons), "both consumers took a share"
    finally:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.stop()


@pytest.mark.parametrize("producer", ["amqp", "nats", "sse"], indirect=True)
def test_a_source_that_cannot_consume_is_down_with_a_precise_error_and_no_password(
    tmp_path: Path, producer: Producer
) -> None:
    """A refused login (amqp), a stream that does not exist (nats), an endpoint that is not an
    event stream (sse): the source is down saying why, the daemon serves on, no password shows."""
    kind = kind_of(producer)
    source_id = SOURCE[kind]
    password = secrets.token_hex(8)
    broken = {
        "amqp": producer.source(producer.url.replace("guest:guest@", f"guest:{password}@")),
        "nats": producer.source().replace(f"stream: {getattr(producer, 'stream', '')}", "stream: NOPE"),
        "sse": producer.source(producer.url.replace("/events", f"/nothing?token={password}")),
    }[kind]
    with running_daemon(tmp_path, definitions((source_id, broken))) as daemon:
        state = wait_for(lambda: (s := source_state(daemon, source_id))["last_error"] and s, timeout=20)
        assert state["state"] in ("down", "connecting")
        expected = {"amqp": "ACCESS_REFUSED", "nats": "stream not found", "sse": "HTTP 404"}[kind]
        assert expected in state["last_error"], state["last_error"]
        assert daemon.request("GET", "/readyz")[0] == 200
        assert password not in json.dumps(daemon.request("GET", "/v1/sources")[1])
    assert password not in daemon.log.read_text()


@pytest.mark.parametrize("producer", ["amqp"], indirect=True)
def test_an_amqp_queue_deleted_under_the_consumer_is_declared_again(tmp_path: Path, producer: Amqp) -> None:
    async def delete() -> None:
        connection = await aio_pika.connect(producer.url, timeout=10)
        async with connection:
            await (await connection.channel()).queue_delete(producer.queue)

    def declared() -> bool:
        try:
            return producer.waiting() == 0
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False

    with running_daemon(tmp_path, definitions(("jobs", producer.source()))) as daemon:
        consuming(daemon, "jobs")
        asyncio.run(delete())
        failed = wait_for(lambda: (s := source_state(daemon, "jobs"))["last_error"] and s, what="the cancel")
        assert "cancelled the consumer of queue" in failed["last_error"]
        wait_for(declared, timeout=15, what="the queue declared again")
        consuming(daemon, "jobs")
        producer.publish(job(1))
        assert numbers(daemon, "jobs", 1) == [1]


@pytest.mark.parametrize("producer", ["nats"], indirect=True)
def test_a_nats_durable_deleted_under_the_consumer_is_created_again(tmp_path: Path, producer: Nats) -> None:
    with running_daemon(tmp_path, definitions(("orders", producer.source()))) as daemon:
        consuming(daemon, "orders")
        asyncio.run(producer._call(lambda js: js.delete_consumer(producer.stream, "triggerd")))
        wait_for(lambda: source_state(daemon, "orders")["last_error"], timeout=15, what="the loss noticed")
        consuming(daemon, "orders")
        producer.publish(job(1))
        assert numbers(daemon, "orders", 1) == [1]
        wait_for(lambda: producer.waiting() == 0, what="the ack")  # it follows the commit the run shows


def test_amqp_deliveries_the_store_refuses_are_acknowledged_in_none_of_their_messages(
    tmp_path: Path, rabbitmq_server: BrokerServer
) -> None:
    """Five messages published together reach the daemon (prefetch 16) while the store refuses
    writes (a full disk). One basic.ack with `multiple` would settle every earlier delivery of the
    channel, so none may go out: when the daemon is SIGKILLed in that state, RabbitMQ requeues all
    five. A new daemon, with space back, gives each one run, in order, and acknowledges them all."""
    producer = Amqp(rabbitmq_server)
    pad = "x" * 20_000  # large inputs need new pages, which a full disk cannot give
    defs = definitions(("jobs", producer.source()))
    defs = defs.replace("n: $.event.data.n,", "n: $.event.data.n, pad: $.event.data.pad,")

    async def publish_together() -> None:
        connection = await aio_pika.connect(producer.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            for n in range(1, 6):
                body = json.dumps({"type": "job.created", "id": f"j-{n}", "n": n, "pad": pad}).encode()
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=producer.queue)

    with (
        small_disk(tmp_path / "state", "2m") as disk,
        running_daemon(tmp_path, defs) as daemon,
    ):
        consuming(daemon, "jobs")
        filler = fill(disk)
        asyncio.run(publish_together())
        paused = wait_for(lambda: (s := source_state(daemon, "jobs"))["last_error"] and s, what="the pause")
        assert "store refused the write" in paused["last_error"]
        wait_for(lambda: producer.waiting() == 0, what="all five delivered to the daemon")
        assert runs(daemon, "on-jobs") == []
        daemon.stop(signal.SIGKILL)
        assert wait_for(lambda: producer.waiting() == 5, timeout=30, what="all five requeued")  # none acknowledged
        filler.unlink()
        daemon.start()
        assert numbers(daemon, "jobs", 5, timeout=30) == [1, 2, 3, 4, 5]
        wait_for(lambda: source_state(daemon, "jobs")["messages"]["published"] == 5, what="every message handled")
        assert producer.waiting() == 0
        assert len(runs(daemon, "on-jobs")) == 5
