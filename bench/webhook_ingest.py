"""Webhook ingest: GitHub-signed requests, verified, mapped, committed and answered 202.

The daemon and a bare aiohttp handler (answers 202 after reading the body: the baseline)
each run in their own process; this script is the load generator, a third process.
Closed loop at rising concurrency gives throughput; an open loop at a fixed rate gives
latency at that rate (goal: p99 under 20 ms at 500 requests/s, throughput at least half
the bare handler's). Each closed-loop row also prints each server's CPU time per request and
how many cores the load generator used: when the latter is 1.00, the row's rate is the load
generator's ceiling, not the server's. The last column is the most any server with the daemon's CPU
time per request could serve on this machine: every core divided by (daemon + load generator CPU
per request), as if the daemon spread over all the cores the load generator leaves. The runs are
queued behind one long-running command so that the figures measure ingest, not agents. Loopback
only, bounded in time.

    .venv/bin/python bench/webhook_ingest.py [--seconds 3] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from loopback import free_port, start_daemon, wait_port

SECRET = "bench-secret"
BODY = json.dumps(
    {
        "action": "opened",
        "number": 1347,
        "pull_request": {
            "title": "Amazing new feature",
            "user": {"login": "octocat"},
            "draft": False,
            "body": "Please pull these awesome changes in! " * 20,
            "labels": [{"name": "enhancement"}, {"name": "needs-review"}],
        },
        "repository": {"full_name": "octocat/Hello-World", "private": False},
    }
).encode()
SIGNATURE = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()

BARE = """
import sys
from aiohttp import web
async def hook(request):
    await request.read()
    return web.json_response({"run_id": "x", "trigger_id": "bench", "status": "pending"}, status=202)
app = web.Application()
app.router.add_post("/webhooks/bench", hook)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

DEFINITIONS = """\
agent: {id: parked, type: command, command: [sleep, "600"]}
---
trigger:
  id: bench
  type: webhook
  webhook:
    authentication: {type: github, secret: "${BENCH_SECRET}"}
    filter: {field: "$.body.action", operator: in, value: [opened, synchronize]}
  agent:
    id: parked
    input_mapping:
      number: {path: $.body.number, required: true}
      title: $.body.pull_request.title
      author: $.body.pull_request.user.login
      labels: "$.body.pull_request.labels[*].name"
  max_concurrent: 1
  max_queued: 100000000
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def send(session: aiohttp.ClientSession, url: str, statuses: dict[int, int]) -> float:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": SIGNATURE,
    }
    started = time.perf_counter()
    async with session.post(url, data=BODY, headers=headers) as response:
        await response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
    return time.perf_counter() - started


async def closed_loop(url: str, concurrency: int, seconds: float) -> tuple[float, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await send(session, url, statuses))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, statuses


async def open_loop(url: str, rate: float, seconds: float) -> tuple[float, list[float], dict[int, int]]:
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(session, url, statuses)))
        latencies = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, list(latencies), statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        daemon_port, bare_port = free_port(), free_port()
        (root / "defs").mkdir()
        (root / "defs" / "bench.yaml").write_text(DEFINITIONS)
        (root / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{daemon_port}"}}\nstore: {{url: "sqlite:///./state.db"}}\n'
            "definitions: [defs]\nlogging: {level: warning, format: json}\nlimits: {shutdown_grace_seconds: 0}\n"
        )
        env = {**os.environ, "BENCH_SECRET": SECRET}
        daemon = start_daemon(root, env)
        bare = subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)], stderr=subprocess.DEVNULL)
        try:
            wait_port(daemon_port)
            wait_port(bare_port)
            targets = {
                "bare": f"http://127.0.0.1:{bare_port}/webhooks/bench",
                "daemon": f"http://127.0.0.1:{daemon_port}/webhooks/bench",
            }
            asyncio.run(closed_loop(targets["daemon"], 4, 0.5))  # warm up both
            asyncio.run(closed_loop(targets["bare"], 4, 0.5))
            pids = {"bare": bare.pid, "daemon": daemon.pid}
            print(
                f"{'concurrency':>11}  {'bare req/s':>10}  {'p50/p99 ms':>13}  {'daemon req/s':>12}  "
                f"{'p50/p99 ms':>13}  {'ratio':>5}  {'server CPU us/req bare, daemon':>30}  {'loadgen cores':>13}  "
                f"{'daemon ceiling':>14}"
            )
            for concurrency in args.concurrency:
                row = {}
                for name, url in targets.items():
                    server_before, own_before, started = cpu_seconds(pids[name]), time.process_time(), time.time()
                    rate, latencies, statuses = asyncio.run(closed_loop(url, concurrency, args.seconds))
                    assert set(statuses) == {202}, statuses
                    cost = (cpu_seconds(pids[name]) - server_before) / len(latencies) * 1e6
                    own = time.process_time() - own_before
                    load = own / (time.time() - started)
                    ceiling = (os.cpu_count() or 1) * 1e6 / (cost + own / len(latencies) * 1e6)
                    row[name] = (rate, pct(latencies, 0.5), pct(latencies, 0.99), cost, load, ceiling)
                bare_rate, daemon_rate = row["bare"][0], row["daemon"][0]
                print(
                    f"{concurrency:>11}  {bare_rate:>10.0f}  {row['bare'][1]:>6.1f}/{row['bare'][2]:<6.1f}  "
                    f"{daemon_rate:>12.0f}  {row['daemon'][1]:>6.1f}/{row['daemon'][2]:<6.1f}  "
                    f"{daemon_rate / bare_rate:>5.2f}  {row['bare'][3]:>14.0f}, {row['daemon'][3]:<14.0f}  "
                    f"{row['bare'][4]:>6.2f}, {row['daemon'][4]:<5.2f}  "
                    f"{row['daemon'][5]:>6.0f} ({row['daemon'][5] / bare_rate:.2f})"
                )
            for name, url in targets.items():
                achieved, latencies, statuses = asyncio.run(open_loop(url, args.rate, args.seconds))
                assert set(statuses) == {202}, statuses
                print(
                    f"open loop {name:>6} at {args.rate:.0f}/s: achieved {achieved:.0f}/s, "
                    f"p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
                    f"max {max(latencies) * 1000:.1f} ms"
                )
        finally:
            for process in (daemon, bare):
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()
