"""Webhook ingest: GitHub-signed requests, verified, mapped, committed and answered 202.

Three servers, each in its own process, measured in the same run and interleaved (round after
round, each server in turn), with `wrk` as the load generator (one C thread, 16 connections,
`--latency`): (a) a bare aiohttp handler that reads the body and answers 202; (b) a naive durable
handler, the simplest code an operator could write: the HMAC checked with hmac.compare_digest,
`json.loads`, one SQLite WAL insert and commit per request inline on the event loop, 202;
(c) the triggerd daemon, with a GitHub-authenticated webhook trigger, a filter, an input mapping
and a command agent (the runs queue behind one parked command, so the figures measure ingest,
not agents), logging at its default level (info, JSON) to a file. Every request is the same 1 KiB
pull-request body with a valid `X-Hub-Signature-256` and a fresh `X-GitHub-Delivery` (the daemon
keys idempotency on it, so every request is a new run).

Each row gives requests/s, wrk's p50/p99 latency, and the server's CPU time (from /proc) per
request; the summary gives the ranges over the rounds and the ratios daemon/naive and daemon/bare
of each round. The fixed-rate figure (p99 at `--rate` requests/s) comes from this script's own
paced client (Python, aiohttp, open loop: requests leave on schedule whatever the answers do),
because wrk cannot pace and its Lua `delay()` only spaces each connection's requests after the
previous answer (a closed loop, which hides queueing). Afterwards every store is counted: a run
acknowledged but not stored fails the bench.

With `--store postgresql` a daemon on a throwaway PostgreSQL server (bench/postgres.py) is measured
too, in the same rounds; with `--daemons N`, N daemons sharing that store (wrk's Lua sends each
request to the next daemon's port is not possible, so each daemon gets its own wrk of 16/N
connections, run at once). Their CPU includes the database's processes, shown apart in "db".

    .venv/bin/python bench/webhook_ingest.py [--seconds 5] [--rounds 3] [--rate 500] [--baseline DIR]
        [--store postgresql [--daemons 2]]

With `--baseline DIR` the daemon of another version (DIR holds its `triggerd` package, e.g.
`git archive OLD triggerd | tar -x -C DIR`) is measured too, in the same rounds: a before/after
in one run.

`wrk` is Debian's package: `apt-get install wrk` (the bench says so and exits 2 when it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
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
CONNECTIONS = 16

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

# The naive durable handler: what an operator could write in an afternoon. The same synchronous
# level as the daemon's default (NORMAL: durable at each commit in WAL mode, short of power loss).
NAIVE = """
import hashlib, hmac, json, sqlite3, sys, uuid
from aiohttp import web
SECRET = sys.argv[3].encode()
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, delivery TEXT UNIQUE, input TEXT)")
async def hook(request):
    body = await request.read()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
        return web.json_response({"error": "authentication failed"}, status=401)
    payload = json.loads(body)
    if payload["action"] not in ("opened", "synchronize"):
        return web.json_response({"status": "filtered"})
    pr = payload["pull_request"]
    run = {"number": payload["number"], "title": pr["title"], "author": pr["user"]["login"],
           "labels": [label["name"] for label in pr["labels"]]}
    run_id = uuid.uuid4().hex
    db.execute("BEGIN")
    db.execute("INSERT INTO runs VALUES (?, ?, ?)", (run_id, request.headers["X-GitHub-Delivery"], json.dumps(run)))
    db.execute("COMMIT")
    return web.json_response({"run_id": run_id, "trigger_id": "bench", "status": "pending"}, status=202)
app = web.Application()
app.router.add_post("/webhooks/bench", hook)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

# wrk's Lua: every request the same signed body and a fresh delivery id (a per-invocation prefix
# from the script's arguments, then a counter); `done` prints the figures as one JSON line.
WRK_LUA = """
local prefix, counter = "x", 0
function init(args) prefix = args[1] end
function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "pull_request",
    ["X-GitHub-Delivery"] = prefix .. "-" .. counter,
    ["X-Hub-Signature-256"] = "%(signature)s",
  }
  return wrk.format("POST", nil, headers, wrk.body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, '
    .. '"non2xx": %%d, "socket": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
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
    """One server measured (or N daemons on one store, each with its own wrk), and how to count its store."""

    name: str
    urls: list[str]
    pids: list[int]
    count_stored: object  # () -> int: rows in the server's store
    database: PostgresServer | None = None
    acknowledged: int = 0  # 202s over the whole run, warm-up and paced load included
    rows: list[dict[str, float]] = field(default_factory=list)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the servers plus their database, and of the database alone."""
        db = 0.0
        if self.database is not None:
            main = self.database.postmaster_pid()
            db = sum(cpu_seconds(pid) for pid in [main, *children(main)])
        return sum(cpu_seconds(pid) for pid in self.pids) + db, db


def run_wrk(target: Target, seconds: int, script: Path) -> dict[str, float]:
    """One wrk per URL at once (16 connections shared out), their figures combined, and the server CPU."""
    per = max(1, CONNECTIONS // len(target.urls))
    cpu_before, db_before = target.cpu()
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{per}", f"-d{seconds}s", "--latency", "-s", str(script), url, "--", uuid.uuid4().hex],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in target.urls
    ]
    outputs = [p.communicate(timeout=seconds + 60)[0] for p in procs]
    cpu_after, db_after = target.cpu()
    results = []
    for out in outputs:
        line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
        if line is None:
            sys.exit(f"wrk printed no figures:\n{out}")
        results.append(json.loads(line[4:]))
    requests = sum(r["requests"] for r in results)
    bad = sum(r["non2xx"] for r in results)
    if bad:
        sys.exit(f"{target.name}: {bad} answers were not 2xx")
    target.acknowledged += requests
    duration = max(r["duration_us"] for r in results) / 1e6
    return {
        "rps": requests / duration,
        "p50": max(r["p50_us"] for r in results) / 1000,
        "p99": max(r["p99_us"] for r in results) / 1000,
        "cpu": (cpu_after - cpu_before) / requests * 1e6,
        "db": (db_after - db_before) / requests * 1e6,
        "socket_errors": sum(r["socket"] for r in results),
    }


async def paced(target: Target, rate: float, seconds: float) -> tuple[float, list[float]]:
    """Open loop: request i leaves at start + i/rate, whatever happened to the others."""
    statuses: dict[int, int] = {}

    async def send(session: aiohttp.ClientSession, url: str) -> float:
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

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(session, target.urls[i % len(target.urls)])))
        latencies = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    if set(statuses) != {202}:
        sys.exit(f"{target.name}: paced answers {statuses}")
    target.acknowledged += len(latencies)
    return len(latencies) / elapsed, sorted(latencies)


def sqlite_count(path: Path, table: str = "runs") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def postgres_count(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM runs").fetchone()
        return int(row[0]) if row else 0


def start_daemons(
    root: Path, name: str, store_url: str, count: int, env: dict[str, str]
) -> tuple[list[str], list[subprocess.Popen[bytes]]]:
    """`count` daemons on one store, each in its own folder and port, logging (info, JSON) to a file there."""
    ports, processes = [free_port() for _ in range(count)], []
    for n, port in enumerate(ports):
        folder = root / f"{name}-{n}"
        (folder / "defs").mkdir(parents=True)
        (folder / "defs" / "bench.yaml").write_text(DEFINITIONS)
        (folder / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "{store_url}", instance: {name}-{n}}}\n'
            "definitions: [defs]\nlogging: {level: info, format: json}\nlimits: {shutdown_grace_seconds: 0}\n"
        )
        processes.append(start_daemon(folder, env, (folder / "daemon.log").open("ab")))
    for port in ports:
        wait_port(port)
    return [f"http://127.0.0.1:{port}/webhooks/bench" for port in ports], processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every server in turn")
    parser.add_argument("--rate", type=float, default=500.0, help="the paced run's requests/s")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--daemons", type=int, default=1, help="daemons sharing the PostgreSQL store")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure, interleaved, the daemon of the triggerd package in this folder (git archive of a commit)",
    )
    args = parser.parse_args()
    if args.daemons != 1 and args.store != "postgresql":
        parser.error("--daemons needs --store postgresql (SQLite is one daemon's file)")
    if shutil.which("wrk") is None:
        print("this bench needs wrk: apt-get install wrk", file=sys.stderr)
        sys.exit(2)
    database = start_postgres(free_port()) if args.store == "postgresql" else None
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        script = root / "signed.lua"
        script.write_text(f"wrk.body = [==[{BODY.decode()}]==]\n" + WRK_LUA % {"signature": SIGNATURE})
        env = {**os.environ, "BENCH_SECRET": SECRET}
        try:
            targets: list[Target] = []
            for name, code, extra in (("bare", BARE, []), ("naive", NAIVE, [str(root / "naive.db"), SECRET])):
                port = free_port()
                processes.append(
                    subprocess.Popen([sys.executable, "-c", code, str(port), *extra], stderr=subprocess.DEVNULL)
                )
                wait_port(port)
                counter = (lambda: sqlite_count(root / "naive.db")) if name == "naive" else (lambda: -1)
                targets.append(Target(name, [f"http://127.0.0.1:{port}/webhooks/bench"], [processes[-1].pid], counter))
            urls, started = start_daemons(root, "sqlite", "sqlite:///./state.db", 1, env)
            processes += started
            db_path = root / "sqlite-0" / "state.db"
            targets.append(Target("daemon", urls, [p.pid for p in started], lambda: sqlite_count(db_path)))
            if args.baseline is not None:  # the same daemon from another tree, its own folder and store
                base_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
                urls, started = start_daemons(root, "baseline", "sqlite:///./state.db", 1, base_env)
                processes += started
                base_path = root / "baseline-0" / "state.db"
                targets.append(Target("baseline", urls, [p.pid for p in started], lambda: sqlite_count(base_path)))
            if database is not None:
                url = database.database()
                urls, started = start_daemons(root, "postgresql", url, args.daemons, env)
                processes += started
                name = "daemon-pg" + (f" x{args.daemons}" if args.daemons > 1 else "")
                targets.append(
                    Target(name, urls, [p.pid for p in started], lambda: postgres_count(url), database=database)
                )
            measure(targets, args, script)
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
            if database is not None:
                database.remove()


def span(values: list[float], key: str) -> str:
    digits = 1 if key in ("p50", "p99") else 0
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def measure(targets: list[Target], args: argparse.Namespace, script: Path) -> None:
    for target in targets:  # warm up every server (its answers are counted too)
        run_wrk(target, 1, script)
    print(f"wrk: 1 thread, {CONNECTIONS} connections, {args.seconds:g} s per run; CPU = the server's (and db's)")
    print(f"{'round':>5}  {'server':<16} {'req/s':>7}  {'p50/p99 ms':>13}  {'CPU us/req':>10}  {'db':>5}")
    for n in range(1, args.rounds + 1):
        for target in targets:
            row = run_wrk(target, args.seconds, script)
            target.rows.append(row)
            print(
                f"{n:>5}  {target.name:<16} {row['rps']:>7.0f}  {row['p50']:>6.1f}/{row['p99']:<6.1f}  "
                f"{row['cpu']:>10.0f}  {row['db']:>5.0f}"
                + (f"  ({row['socket_errors']:.0f} socket errors)" if row["socket_errors"] else "")
            )
    print("\nranges over the rounds")
    for target in targets:
        rps, p50, p99, cpu = (span([r[k] for r in target.rows], k) for k in ("rps", "p50", "p99", "cpu"))
        print(f"  {target.name:<16} req/s {rps}, p50 {p50} ms, p99 {p99} ms, CPU {cpu} us/req")
    by_name = {t.name: t for t in targets}
    for target in targets[2:]:
        for base in ("naive", "bare", *(["baseline"] if target.name == "daemon" and "baseline" in by_name else [])):
            ratios = [r["rps"] / b["rps"] for r, b in zip(target.rows, by_name[base].rows, strict=True)]
            cpu = [r["cpu"] / b["cpu"] for r, b in zip(target.rows, by_name[base].rows, strict=True)]
            print(
                f"  {target.name}/{base}: req/s {min(ratios):.2f}-{max(ratios):.2f}x, "
                f"CPU per request {min(cpu):.2f}-{max(cpu):.2f}x"
            )
    print(f"\npaced (this script's open-loop client) at {args.rate:.0f} requests/s for {args.seconds:g} s")
    for target in targets:
        achieved, latencies = asyncio.run(paced(target, args.rate, args.seconds))
        p50, p99 = (latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 for q in (0.5, 0.99))
        print(
            f"  {target.name:<16} achieved {achieved:.0f}/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms"
        )
    print("\nstored after the run (every acknowledged request must be a row)")
    lost = False
    for target in targets[1:]:
        stored = target.count_stored()  # type: ignore[operator]
        print(f"  {target.name:<16} acknowledged {target.acknowledged}, stored {stored}")
        lost = lost or stored < target.acknowledged
    if lost:
        sys.exit("a server acknowledged requests it did not store")


if __name__ == "__main__":
    main()
