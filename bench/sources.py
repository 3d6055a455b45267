"""Redis Streams to committed runs (SPEC 5.4): a real daemon against the broker's own client.

One redis-server (the machine's `redis-server`) on a free loopback port. The baseline reads N
entries of a stream with redis-py's asyncio client through a consumer group, XACKing each,
the same loop triggerd runs minus the commit. Then a daemon with a `redis-stream` source and
one event trigger consumes N other entries; the trigger's agent is parked (one `sleep`, the rest
queued), so the figure is messages turned into committed runs and acknowledged, not agents run.
Loopback only, bounded.

    .venv/bin/python bench/sources.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopback import free_port, start_daemon, wait_port
from redis.asyncio import Redis

DEFS = """\
agent: {{id: parked, type: command, command: [sleep, "600"], max_concurrent: 1}}
---
source:
  id: orders
  type: redis-stream
  url: "redis://127.0.0.1:{port}/0"
  stream: bench
  start: "0"
  event: {{type: order.created, id: $.body.id}}
---
trigger:
  id: on-order
  type: event
  event: {{pattern: order.created, source: orders}}
  agent: {{id: parked, input_mapping: {{n: $.event.data.n}}}}
  max_queued: 1000000
"""


async def fill(client: Redis, stream: str, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(stream, {"body": json.dumps({"id": f"{stream}-{n}", "n": n})})
        if n % 1000 == 999:
            await pipe.execute()
    await pipe.execute()


async def baseline(url: str, count: int) -> float:
    """Entries per second through XREADGROUP (COUNT 16, as max_in_flight) and one XACK each."""
    client = Redis.from_url(url)
    await fill(client, "raw", count)
    await client.xgroup_create("raw", "g", id="0")
    started, seen = time.perf_counter(), 0
    while seen < count:
        found = await client.xreadgroup("g", "c", {"raw": ">"}, count=16, block=1000)
        for _stream, entries in found:
            for entry_id, fields in entries:
                json.loads(fields[b"body"])
                await client.xack("raw", "g", entry_id)
                seen += 1
    elapsed = time.perf_counter() - started
    await client.aclose()
    return count / elapsed


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            url = f"redis://127.0.0.1:{port}/0"
            raw = asyncio.run(baseline(url, args.messages))
            http = free_port()
            (root / "defs").mkdir()
            (root / "defs" / "all.yaml").write_text(DEFS.format(port=port))
            (root / "triggerd.yaml").write_text(
                f'server: {{listen: "127.0.0.1:{http}"}}\nstore: {{url: "sqlite:///./triggerd.db"}}\n'
                "definitions: [defs]\nlogging: {level: warning}\n"
            )
            daemon = start_daemon(root, {"PATH": os.environ["PATH"]})
            try:
                wait_port(http)
                time.sleep(1.0)  # the source connects in the background
                client = Redis.from_url(url)
                asyncio.run(fill(client, "bench", args.messages))
                started = time.perf_counter()
                deadline = started + 600
                while committed(root / "triggerd.db") < args.messages and time.monotonic() < deadline:
                    time.sleep(0.05)
                elapsed = time.perf_counter() - started
                done = committed(root / "triggerd.db")
            finally:
                daemon.terminate()
                daemon.wait(60)
        finally:
            redis.terminate()
            redis.wait(30)
    print(f"redis-py XREADGROUP + XACK (baseline)     {raw:10.0f} messages/s")
    print(f"triggerd redis-stream -> committed runs   {done / elapsed:10.0f} messages/s ({done} runs)")
    print(f"ratio                                     {done / elapsed / raw:10.2f}")
    if done != args.messages:
        sys.exit(f"only {done} of {args.messages} messages became runs")


if __name__ == "__main__":
    main()
