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

With `--store postgresql` the same load also goes, in the same run, to daemons on a throwaway
PostgreSQL server (bench/postgres.py); with `--daemons N`, to N daemons sharing that store, each
request to the next daemon in turn (what a round-robin load balancer does). Their server CPU
includes the database's processes, shown apart in "of it db".

    .venv/bin/python bench/webhook_ingest.py [--seconds 3] [--rate 500] [--store postgresql [--daemons 2]]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from loopback import free_port, start_daemon, wait_port
from postgres import PostgresServer, start_postgres

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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); 0 for one that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a PostgreSQL server's backends)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return found


@dataclass
class Target:
    """What one row of figures measures: one or more servers (requests go round-robin), and their store."""

    urls: list[str]
    pids: list[int]
    database: PostgresServer | None = None

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the servers plus their database, and of the database alone."""
        db = 0.0
        if self.database is not None:
            main = self.database.postmaster_pid()
            db = sum(cpu_seconds(pid) for pid in [main, *children(main)])
        return sum(cpu_seconds(pid) for pid in self.pids) + db, db


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


async def closed_loop(urls: list[str], concurrency: int, seconds: float) -> tuple[float, list[float], dict[int, int]]:
    """Each request to the next of `urls` in turn (one URL: always that one)."""
    latencies: list[float] = []
    turn = itertools.cycle(urls)
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await send(session, next(turn), statuses))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, statuses


async def open_loop(urls: list[str], rate: float, seconds: float) -> tuple[float, list[float], dict[int, int]]:
    statuses: dict[int, int] = {}
    turn = itertools.cycle(urls)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(session, next(turn), statuses)))
        latencies = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, list(latencies), statuses


def start_daemons(
    root: Path, name: str, store_url: str, count: int, env: dict[str, str]
) -> tuple[list[str], list[subprocess.Popen[bytes]]]:
    """`count` daemons on one store, each in its own folder and port; their webhook URLs and processes."""
    ports, processes = [free_port() for _ in range(count)], []
    for n, port in enumerate(ports):
        folder = root / f"{name}-{n}"
        (folder / "defs").mkdir(parents=True)
        (folder / "defs" / "bench.yaml").write_text(DEFINITIONS)
        (folder / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "{store_url}", instance: {name}-{n}}}\n'
            "definitions: [defs]\nlogging: {level: warning, format: json}\nlimits: {shutdown_grace_seconds: 0}\n"
        )
        processes.append(start_daemon(folder, env))
    for port in ports:
        wait_port(port)
    return [f"http://127.0.0.1:{port}/webhooks/bench" for port in ports], processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--daemons", type=int, default=1, help="daemons sharing the PostgreSQL store")
    args = parser.parse_args()
    if args.daemons != 1 and args.store != "postgresql":
        parser.error("--daemons needs --store postgresql (SQLite is one daemon's file)")
    database = start_postgres(free_port()) if args.store == "postgresql" else None
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = {**os.environ, "BENCH_SECRET": SECRET}
        bare_port = free_port()
        processes.append(subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)], stderr=subprocess.DEVNULL))
        try:
            wait_port(bare_port)
            targets = {"bare": Target([f"http://127.0.0.1:{bare_port}/webhooks/bench"], [processes[0].pid])}
            urls, started = start_daemons(root, "sqlite", "sqlite:///./state.db", 1, env)
            processes += started
            targets["sqlite"] = Target(urls, [p.pid for p in started])
            if database is not None:
                urls, started = start_daemons(root, "postgresql", database.database(), args.daemons, env)
                processes += started
                name = "postgresql" + (f" x{args.daemons}" if args.daemons > 1 else "")
                targets[name] = Target(urls, [p.pid for p in started], database)
            for target in targets.values():  # warm up every server
                asyncio.run(closed_loop(target.urls, 4, 0.5))
            measure(targets, args)
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
            if database is not None:
                database.remove()


def measure(targets: dict[str, Target], args: argparse.Namespace) -> None:
    print(
        f"{'concurrency':>11}  {'target':<14} {'req/s':>6}  {'p50/p99 ms':>13}  {'ratio':>5}  "
        f"{'server CPU us/req':>17}  {'of it db':>8}  {'loadgen cores':>13}  {'ceiling (ratio)':>15}"
    )
    for concurrency in args.concurrency:
        bare_rate = 0.0
        for name, target in targets.items():
            server_before, db_before = target.cpu()
            own_before, started = time.process_time(), time.time()
            rate, latencies, statuses = asyncio.run(closed_loop(target.urls, concurrency, args.seconds))
            assert set(statuses) == {202}, statuses
            server_after, db_after = target.cpu()
            cost = (server_after - server_before) / len(latencies) * 1e6
            db_cost = (db_after - db_before) / len(latencies) * 1e6
            own = time.process_time() - own_before
            load = own / (time.time() - started)
            ceiling = (os.cpu_count() or 1) * 1e6 / (cost + own / len(latencies) * 1e6)
            bare_rate = bare_rate or rate
            print(
                f"{concurrency:>11}  {name:<14} {rate:>6.0f}  "
                f"{pct(latencies, 0.5):>6.1f}/{pct(latencies, 0.99):<6.1f}  "
                f"{rate / bare_rate:>5.2f}  {cost:>17.0f}  {db_cost:>8.0f}  {load:>13.2f}  "
                f"{ceiling:>6.0f} ({ceiling / bare_rate:.2f})"
            )
    for name, target in targets.items():
        achieved, latencies, statuses = asyncio.run(open_loop(target.urls, args.rate, args.seconds))
        assert set(statuses) == {202}, statuses
        print(
            f"open loop {name:>14} at {args.rate:.0f}/s: achieved {achieved:.0f}/s, "
            f"p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
