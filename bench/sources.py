"""Broker sources to committed runs (SPEC 5.4): a real daemon against the broker's own client.

For Redis Streams (the machine's `redis-server`) and RabbitMQ (`rabbitmq-server`, a private node),
each on a free loopback port in a temporary folder. The baseline, in the same run, reads N
messages with the broker's own asyncio client (redis-py: XREADGROUP COUNT 16 through a consumer
group; aio-pika: a consumer with prefetch 16), decodes each body and acknowledges it one by one:
the consumer loop an operator would write, minus any durable work. Then a daemon with one source
and one event trigger consumes N other messages; the trigger's agent is parked (one `sleep`, the
rest queued), so the figure is messages turned into committed runs and acknowledged, not agents
run. Both read a backlog filled beforehand; the daemon's rate is timed from its first committed
run to its last. Loopback only, bounded.

The two cores are shared with other work, so one pair of figures says little: each broker is
measured in `--rounds` rounds (baseline, then daemon, each on a stream or queue of its own, on
the same server), and every round's ratio is printed with their median and range.

`--max-in-flight` sets the source's `max_in_flight` and, to compare like with like, the
baseline's COUNT and prefetch (16, the default, unless given).

    .venv/bin/python bench/sources.py [--messages 5000] [--broker redis|amqp|all] [--rounds 3]
                                      [--max-in-flight 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
from loopback import free_port, start_daemon, start_redis, wait_port
from rabbitmq_node import node_env, server_binary
from redis.asyncio import Redis

PREFETCH = 16  # the source's max_in_flight by default, and the baseline's batch

DEFS = """\
agent: {{id: parked, type: command, command: [sleep, "600"], max_concurrent: 1}}
---
source:
  id: orders
  {source}
  event: {{type: order.created, id: $.body.id}}
---
trigger:
  id: on-order
  type: event
  event: {{pattern: order.created, source: orders}}
  agent: {{id: parked, input_mapping: {{n: $.event.data.n}}}}
  max_queued: 1000000
"""


def body(name: str, n: int) -> bytes:
    return json.dumps({"id": f"{name}-{n}", "n": n}).encode()


# --- Redis Streams ----------------------------------------------------------------------------


async def redis_fill(url: str, stream: str, count: int) -> None:
    client = Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(stream, {"body": body(stream, n)})
        if n % 1000 == 999:
            await pipe.execute()
    await pipe.execute()
    await client.aclose()


async def redis_baseline(url: str, stream: str, count: int, window: int = PREFETCH) -> float:
    """Entries per second through XREADGROUP (COUNT `window`, as max_in_flight) and one XACK each."""
    await redis_fill(url, stream, count)
    client = Redis.from_url(url)
    await client.xgroup_create(stream, "g", id="0")
    started, seen = time.perf_counter(), 0
    while seen < count:
        found = await client.xreadgroup("g", "c", {stream: ">"}, count=window, block=1000)
        for _stream, entries in found:
            for entry_id, fields in entries:
                json.loads(fields[b"body"])
                await client.xack(stream, "g", entry_id)
                seen += 1
    elapsed = time.perf_counter() - started
    await client.aclose()
    return count / elapsed


def redis_bench(folder: Path, count: int, rounds: int, window: int) -> list[tuple[float, float, int]]:
    server, port = start_redis(folder)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        results = []
        for n in range(rounds):
            raw = asyncio.run(redis_baseline(url, f"raw{n}", count, window))
            asyncio.run(redis_fill(url, f"bench{n}", count))
            source = f'type: redis-stream\n  url: "{url}"\n  stream: bench{n}\n  start: "0"'
            source += f"\n  max_in_flight: {window}"
            results.append((raw, *through_daemon(folder / f"daemon{n}", source, count)))
        return results
    finally:
        server.terminate()
        server.wait(30)


# --- RabbitMQ ---------------------------------------------------------------------------------


def rabbitmq(folder: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], int]:
    """A private RabbitMQ node: its name, ports, epmd, data and cookie (HOME) all in `folder`."""
    folder.mkdir()
    port, dist, epmd = free_port(), free_port(), free_port()
    env = {**os.environ, **node_env(folder, port, dist, epmd, "triggerd-bench")}
    found = server_binary()
    server = subprocess.Popen(
        [found], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    return server, env, port


def stop_rabbitmq(server: subprocess.Popen[bytes], env: dict[str, str]) -> None:
    ctl = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
    if ctl.exists():
        subprocess.run([str(ctl), "-n", env["RABBITMQ_NODENAME"], "stop"], env=env, capture_output=True, timeout=60)
    if server.poll() is None:
        os.killpg(server.pid, 15)
        server.wait(30)
    epmd = shutil.which("epmd")
    if epmd:  # the node started an epmd of its own on ERL_EPMD_PORT, outside its process group
        subprocess.run([epmd, "-port", env["ERL_EPMD_PORT"], "-kill"], capture_output=True, timeout=30)


async def amqp_fill(url: str, queue: str, count: int) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.declare_queue(queue, durable=True)
    for n in range(count):
        message = aio_pika.Message(body(queue, n), message_id=f"{queue}-{n}")
        await channel.default_exchange.publish(message, routing_key=queue)
    await connection.close()


async def amqp_baseline(url: str, name: str, count: int, window: int = PREFETCH) -> float:
    """Messages per second through an aio-pika consumer (prefetch `window`, as max_in_flight), one ack each."""
    await amqp_fill(url, name, count)
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=window)
    queue = await channel.declare_queue(name, durable=True)
    started, seen = time.perf_counter(), 0
    async with queue.iterator() as messages:
        async for message in messages:
            json.loads(message.body)
            await message.ack()
            seen += 1
            if seen == count:
                break
    elapsed = time.perf_counter() - started
    await connection.close()
    return count / elapsed


def amqp_bench(folder: Path, count: int, rounds: int, window: int) -> list[tuple[float, float, int]]:
    server, env, port = rabbitmq(folder / "rabbitmq")
    try:
        wait_port(port, timeout=90)
        url = f"amqp://guest:guest@127.0.0.1:{port}/"
        results = []
        for n in range(rounds):
            raw = asyncio.run(amqp_baseline(url, f"raw{n}", count, window))
            asyncio.run(amqp_fill(url, f"bench{n}", count))
            source = f'type: amqp\n  url: "{url}"\n  queue: bench{n}\n  max_in_flight: {window}'
            results.append((raw, *through_daemon(folder / f"daemon{n}", source, count)))
        return results
    finally:
        stop_rabbitmq(server, env)


# --- the daemon -------------------------------------------------------------------------------


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def through_daemon(root: Path, source: str, count: int) -> tuple[float, int]:
    """A daemon consuming a backlog of `count` messages: (runs per second from its first committed
    run to its last, runs committed)."""
    http = free_port()
    (root / "defs").mkdir(parents=True)
    (root / "defs" / "all.yaml").write_text(DEFS.format(source=source))
    (root / "triggerd.yaml").write_text(
        f'server: {{listen: "127.0.0.1:{http}"}}\nstore: {{url: "sqlite:///./triggerd.db"}}\n'
        "definitions: [defs]\nlogging: {level: warning}\n"
    )
    db = root / "triggerd.db"
    daemon = start_daemon(root, {"PATH": os.environ["PATH"]})
    try:
        deadline = time.monotonic() + 600
        first = poll(lambda: committed(db) > 0, deadline)
        started, runs_at_start = time.perf_counter(), committed(db)
        poll(lambda: committed(db) >= count, deadline)
        elapsed = time.perf_counter() - started
        done = committed(db)
    finally:
        daemon.terminate()
        daemon.wait(60)
    if not first:
        sys.exit("the daemon committed no run")
    return (done - runs_at_start) / elapsed, done


def poll(done: Callable[[], bool], deadline: float) -> bool:
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--broker", choices=["redis", "amqp", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=PREFETCH)
    args = parser.parse_args()
    benches = {"redis": ("Redis Streams", "redis-py", redis_bench), "amqp": ("RabbitMQ", "aio-pika", amqp_bench)}
    failed = []
    for key, (name, client, bench) in benches.items():
        if args.broker not in (key, "all"):
            continue
        with tempfile.TemporaryDirectory() as folder:
            results = bench(Path(folder), args.messages, args.rounds, args.max_in_flight)
        ratios = []
        for n, (raw, rate, done) in enumerate(results, 1):
            ratios.append(rate / raw)
            print(
                f"{name} round {n}: {client} {raw:7.0f}/s   triggerd -> committed runs {rate:7.0f}/s"
                f" ({done} runs)   ratio {rate / raw:.2f}"
            )
            if done != args.messages:
                failed.append(f"{name} round {n}: only {done} of {args.messages} messages became runs")
        print(
            f"{name}, max_in_flight {args.max_in_flight}: ratio median {statistics.median(ratios):.2f},"
            f" range {min(ratios):.2f}-{max(ratios):.2f}"
        )
    if failed:
        sys.exit("\n".join(failed))


if __name__ == "__main__":
    main()
