"""A backlog worked through in full deliveries, against a real redis-server and a real RabbitMQ
(SPEC 5.4): the runner commits a delivery as one batch and acknowledges it at once (the XACK
sent with the next XREADGROUP, one basic.ack `multiple` after an AMQP delivery gathered to the
prefetch window). A daemon SIGKILLed in the middle of the backlog loses no message and fires
none twice, and the poison messages scattered through it are one dead letter each without
holding up or taking down the messages delivered with them."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
import redis

from tests.harness import running_daemon, wait_for
from tests.servers import BrokerServer
from tests.test_sources_redis import source_state

COUNT = 3000
KILLS_AT = (300, 1000, 1700)  # committed runs when the daemon is SIGKILLed: well inside the backlog


def is_poison(n: int) -> bool:
    return n % 250 == 7


def body(n: int) -> bytes:
    return f"poison {n}".encode() if is_poison(n) else json.dumps({"id": f"m-{n}", "n": n}).encode()


GOOD = [n for n in range(COUNT) if not is_poison(n)]


def definitions(source: str) -> str:
    # The agent ends at once, one run at a time: the figure that matters is runs committed.
    return f"""\
agent: {{id: quick, type: command, command: ["true"], max_concurrent: 1}}
---
source:
  id: backlog
  {source}
  event: {{type: item.created, id: $.body.id}}
---
trigger:
  id: on-item
  type: event
  event: {{pattern: item.created, source: backlog}}
  agent: {{id: quick, input_mapping: {{n: $.event.data.n}}}}
  max_queued: 1000000
"""


def fill_stream(url: str, stream: str) -> None:
    with redis.Redis.from_url(url, socket_timeout=10) as client, client.pipeline(transaction=False) as pipe:
        for n in range(COUNT):
            pipe.xadd(stream, {"body": body(n)})
        pipe.execute()


async def _fill_queue(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for n in range(COUNT):
            message = aio_pika.Message(body(n), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=queue)


async def _queue_left(url: str, queue: str) -> int:
    """Messages ready or delivered and unacknowledged: a passive declare counts the ready ones,
    and once no consumer is connected the unacknowledged ones are ready again."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def committed(db: Path) -> list[int]:
    """The `n` of every run committed, as the store has it."""
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return [int(json.loads(row[0])["n"]) for row in conn.execute("SELECT input FROM runs")]
    except sqlite3.OperationalError:  # not created yet
        return []


def run_count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def dead_letters(db: Path) -> list[str]:
    with sqlite3.connect(db, timeout=5) as conn:
        return sorted(bytes(row[0]).decode() for row in conn.execute("SELECT payload FROM dead_messages"))


@pytest.mark.parametrize("kind", ["redis-stream", "amqp"])
def test_a_daemon_killed_mid_backlog_loses_nothing_fires_nothing_twice_and_dead_letters_each_poison_once(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    tag = secrets.token_hex(4)
    left: Callable[[], int]
    if kind == "redis-stream":
        server: BrokerServer = request.getfixturevalue("redis_server")
        stream = f"backlog-{tag}"
        fill_stream(server.url, stream)
        source = f'type: redis-stream\n  url: "{server.url}"\n  stream: {stream}\n  start: "0"\n  claim_idle: 1s'
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        request.addfinalizer(client.close)

        def left() -> int:
            return int(client.xpending(stream, "triggerd")["pending"])
    else:
        server = request.getfixturevalue("rabbitmq_server")
        queue = f"backlog-{tag}"
        asyncio.run(_fill_queue(server.url, queue))
        source = f'type: amqp\n  url: "{server.url}"\n  queue: {queue}'

        def left() -> int:
            return asyncio.run(_queue_left(server.url, queue))

    db = tmp_path / "state" / "triggerd.db"
    with running_daemon(tmp_path, definitions(source)) as daemon:
        # Killed three times: a kill lands while a delivery commits most of the time, and that is
        # where an acknowledgement sent too early would lose the delivery.
        for kill_at in KILLS_AT:
            deadline = time.monotonic() + 60
            while run_count(db) < kill_at:
                assert time.monotonic() < deadline, f"only {run_count(db)} runs after 60 s"
                time.sleep(0.005)
            daemon.stop(signal.SIGKILL)
            assert run_count(db) < len(GOOD), "the kill came after the backlog: it tested nothing"
            assert left() > 0  # what the dead daemon held, or had not taken yet, is still the broker's
            daemon.start()
        wait_for(lambda: run_count(db) >= len(GOOD), timeout=90, what=f"{len(GOOD)} runs")
        # The delivery of the last message is acknowledged once the source holds none in flight;
        # the entries the dead daemon held are claimed from its name after claim_idle.
        wait_for(lambda: source_state(daemon, "backlog")["in_flight"] == 0, what="the last acknowledgement")
        wait_for(lambda: left() == 0, timeout=30, what="nothing left on the broker")
        daemon.stop()  # what is still unacknowledged goes back to the broker
    assert sorted(committed(db)) == GOOD  # every message once: none lost at the kill, none fired twice
    assert dead_letters(db) == sorted(body(n).decode() for n in range(COUNT) if is_poison(n))
    assert left() == 0  # and every one of them acknowledged
