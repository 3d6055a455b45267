"""Dispatch throughput: fires of a trivial command agent through the admin API of a real daemon.

For `--seconds` (2), `wrk` (one C thread, `--concurrency` connections) POSTs the admin API's
fire request as fast as the daemon answers; the runs are counted from the store. Baseline,
measured in the same run: spawning the same command directly with asyncio at the same
concurrency, for as long. Prints runs/s for both, the ratio, the time from fire to finish (the
run's created_at to finished_at, as the store recorded them), and the daemons' CPU time per run
from the first fire to the end of the last run, their spawner processes' included (less
sensitive than rates to other load on the machine). The machine's pace drifts, so `--rounds`
(3) SQLite rounds each run the daemon between two baselines and compare it with their mean; it
prints every round's ratio and their median, and the median round in full. The daemon's rate is
to the poll (every 20 ms) that finds every run final, and the check that reads them all back is
not timed. The SQLite file is in .triggerd/ beside the settings file, as in the default
configuration (config/triggerd.yaml).

With `--store postgresql` the same fires then go, in the same run, to daemons on a throwaway
PostgreSQL server (bench/postgres.py); with `--daemons N`, to N daemons sharing it, each with a
wrk of its own. `--concurrency` is per daemon
(`limits.max_concurrent_runs`, and wrk's connections); the trigger's `max_concurrent` is
concurrency x daemons.

`wrk` is Debian's package: `apt-get install wrk` (the bench says so and exits 2 when it is missing).

    .venv/bin/python bench/dispatch.py [--seconds 2] [--rounds 3] [--concurrency 16] [--sync normal|full]
        [--store postgresql [--daemons 2]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from loopback import free_port, start_daemon, wait_port
from postgres import start_postgres

COMMAND = ["true"]

# wrk's Lua: every request fires the trigger with an empty input; `done` prints the figures as one JSON line.
WRK_LUA = """
wrk.method = "POST"
wrk.body = '{"input": {}}'
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "duration_us": %d, "errors": %d, "socket": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


async def baseline(seconds: float, concurrency: int) -> float:
    """Spawns per second over `seconds`, `concurrency` at a time."""
    deadline = time.perf_counter() + seconds
    spawned = 0

    async def spawning() -> None:
        nonlocal spawned
        while time.perf_counter() < deadline:
            process = await asyncio.create_subprocess_exec(
                *COMMAND,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await process.communicate(b"{}")
            spawned += 1

    start = time.perf_counter()
    await asyncio.gather(*(spawning() for _ in range(concurrency)))
    return spawned / (time.perf_counter() - start)


async def all_finished(session: aiohttp.ClientSession, url: str) -> None:
    """Wait until no run is pending or running. Each poll asks for one row of each: listing every
    run on every poll, as this once did, cost the daemon more than the runs did."""
    while True:
        unfinished = 0
        for status in ("pending", "running"):
            async with session.get(f"{url}/v1/runs?limit=1&trigger=bench&status={status}") as resp:
                unfinished += len((await resp.json())["runs"])
        if not unfinished:
            return
        await asyncio.sleep(0.02)


async def finished_runs(session: aiohttp.ClientSession, url: str, ids: list[str] | None) -> list[float]:
    """Wait until every run is final; return fire -> finish seconds of each, from the store's
    timestamps. ids None: every run of the bench trigger."""
    await all_finished(session, url)
    runs: dict[str, dict[str, object]] = {}
    before = None
    while True:
        query = "?limit=1000&trigger=bench" + (f"&before={before}" if before else "")
        async with session.get(f"{url}/v1/runs{query}") as resp:
            page = await resp.json()
        runs.update({r["id"]: r for r in page["runs"] if ids is None or r["id"] in ids})
        before = page["next_before"]
        if not before:
            break
    if ids is not None:
        assert len(runs) == len(ids), (len(runs), len(ids))
    bad = [r for r in runs.values() if r["status"] != "completed"]
    assert not bad, bad[:3]
    return [
        (datetime.fromisoformat(str(r["finished_at"])) - datetime.fromisoformat(str(r["created_at"]))).total_seconds()
        for r in runs.values()
    ]


async def fire(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/v1/triggers/bench/fire", json={"input": {}}) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["run_id"])


def wrk_fires(urls: list[str], seconds: int, concurrency: int, script: Path) -> tuple[float, int]:
    """Fires for `seconds`, a wrk of `concurrency` connections for each daemon, all at once;
    returns the seconds until the last wrk ended and the fires answered (every one a 202: the
    script exits on any answer of 400 or more, or a socket error)."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script)]
    procs = [
        subprocess.Popen([*command, f"{url}/v1/triggers/bench/fire"], stdout=subprocess.PIPE, text=True) for url in urls
    ]
    try:
        durations, answered = [], 0
        for proc in procs:
            out = proc.communicate(timeout=seconds + 60)[0]
            line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
            if line is None:
                sys.exit(f"wrk printed no figures:\n{out}")
            figures = json.loads(line[4:])
            if figures["errors"] or figures["socket"]:
                sys.exit(f"wrk: {figures['errors']} answers of 400 or more, {figures['socket']} socket errors")
            durations.append(figures["duration_us"] / 1e6)
            answered += figures["requests"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return max(durations), answered


async def through_daemon(
    urls: list[str], seconds: int, concurrency: int, script: Path, cpu: Callable[[], float]
) -> tuple[float, float, float, list[float]]:
    """All fires as fast as wrk sends them: fires accepted and runs finished per second, CPU
    seconds per run (from `cpu`, to the end of the last run), and latencies under a backlog."""
    cpu_before, start = cpu(), time.perf_counter()
    fired, answered = await asyncio.to_thread(wrk_fires, urls, seconds, concurrency, script)
    async with aiohttp.ClientSession() as session:
        # A fire wrk had in flight when it stopped may still be committed after this poll; the
        # backlog of thousands of runs ahead of it makes that moot, and the check below counts runs.
        await all_finished(session, urls[0])  # any daemon reads the shared store
        total = time.perf_counter() - start  # to the poll that found every run final, within 20 ms
        used = cpu() - cpu_before
        latencies = await finished_runs(session, urls[0], None)  # the check and the figures: not timed
    assert len(latencies) >= answered, (len(latencies), answered)  # every 202 is a stored run
    return len(latencies) / fired, len(latencies) / total, used / len(latencies), latencies


async def paced(urls: list[str], fires: int, rate: float) -> list[float]:
    """Fires at a steady rate well below capacity: the latency of one run with no backlog."""
    async with aiohttp.ClientSession() as session:
        ids = []
        for n in range(fires):
            ids.append(await fire(session, urls[n % len(urls)]))
            await asyncio.sleep(1 / rate)
        return await finished_runs(session, urls[0], ids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_cpu_seconds(pid: int) -> float:
    """A daemon's CPU time with its spawner process's (which starts its commands, not theirs)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        try:
            ours = entry.name.isdigit() and b"spawn_helper" in (entry / "cmdline").read_bytes()
            if ours and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += cpu_seconds(int(entry.name))
        except OSError:
            continue  # ended meanwhile
    return total


@dataclass
class Figures:
    accepted: float
    finished: float
    cpu_per_run: float  # every daemon's, from the first fire to the end of the last run
    latencies: list[float]
    unloaded: list[float]


def through_store(root: Path, store: str, daemons: int, args: argparse.Namespace, script: Path) -> Figures:
    """Start `daemons` daemons on one store, fire through them, stop them."""
    ports, processes = [free_port() for _ in range(daemons)], []
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    clients = args.concurrency * daemons
    try:
        for n, port in enumerate(ports):
            folder = root / f"{store.split(':')[0]}-{n}"
            (folder / "defs").mkdir(parents=True)
            (folder / "triggerd.yaml").write_text(
                f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "{store}", sync: {args.sync}}}\n'
                f"definitions: [defs]\nlimits: {{max_concurrent_runs: {args.concurrency}}}\n"
                "logging: {level: warning, format: json}\n"
            )
            (folder / "defs" / "bench.yaml").write_text(
                f"agent: {{id: trivial, type: command, command: {COMMAND}}}\n---\n"
                "trigger:\n  id: bench\n  type: event\n  event: {pattern: never}\n  agent: {id: trivial}\n"
                f"  max_concurrent: {clients}\n  max_queued: 1000000\n"
            )
            processes.append(start_daemon(folder, {**os.environ}))
        for port in ports:
            wait_port(port)
        accepted, finished, cpu_per_run, latencies = asyncio.run(
            through_daemon(
                urls,
                args.seconds,
                args.concurrency,
                script,
                lambda: sum(daemon_cpu_seconds(process.pid) for process in processes),
            )
        )
        unloaded = asyncio.run(paced(urls, 200, 50.0))
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    return Figures(accepted, finished, cpu_per_run, sorted(latencies), sorted(unloaded))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=2, help="each phase of firing or spawning")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sync", choices=["normal", "full"], default="normal")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--daemons", type=int, default=1, help="daemons sharing the PostgreSQL store")
    parser.add_argument("--rounds", type=int, default=3, help="SQLite rounds, each between two baselines")
    args = parser.parse_args()
    if args.daemons != 1 and args.store != "postgresql":
        parser.error("--daemons needs --store postgresql (SQLite is one daemon's file)")
    if shutil.which("wrk") is None:
        print("this bench needs wrk: apt-get install wrk", file=sys.stderr)
        sys.exit(2)
    figures: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        script = root / "fire.lua"
        script.write_text(WRK_LUA)
        # The machine's pace drifts (the spawn baseline moved 1,100-1,700/s within an hour): each
        # round runs the daemon between two baselines and is compared with their mean.
        baselines = [asyncio.run(baseline(args.seconds, args.concurrency))]
        rounds: list[tuple[Figures, float]] = []
        for n in range(args.rounds):
            measured = through_store(root / f"round-{n}", "sqlite:///./.triggerd/state.db", 1, args, script)
            baselines.append(asyncio.run(baseline(args.seconds, args.concurrency)))
            rounds.append((measured, (baselines[-2] + baselines[-1]) / 2))
        ratios = sorted(f.finished / b for f, b in rounds)
        median = sorted(rounds, key=lambda r: r[0].finished / r[1])[len(rounds) // 2]
        figures["sqlite"], direct = median
        if args.store == "postgresql":
            database = start_postgres(free_port())
            try:
                name = "postgresql" + (f" x{args.daemons}" if args.daemons > 1 else "")
                figures[name] = through_store(root, database.database(), args.daemons, args, script)
            finally:
                database.remove()

    def p(q: float, values: list[float]) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    print(f"firing, spawning for {args.seconds} s (concurrency {args.concurrency} per daemon, sync {args.sync})")
    print(f"baselines: asyncio spawn      {', '.join(f'{b:.0f}' for b in baselines)} runs/s")
    for n, (f, b) in enumerate(rounds, 1):
        print(
            f"round {n}: daemon {f.finished:6.0f} runs/s, {f.cpu_per_run * 1e6:4.0f} us CPU per run; "
            f"baseline {b:6.0f} runs/s; ratio {f.finished / b:.2f}"
        )
    print(f"ratios over the rounds {', '.join(f'{r:.2f}' for r in ratios)}; median {ratios[len(ratios) // 2]:.2f}")
    print(f"the median round in full (baseline {direct:.0f} runs/s):")
    for name, f in figures.items():
        print(f"{name}:")
        print(f"  fires accepted              {f.accepted:8.0f} /s  (202 after commit)")
        print(f"  runs finished               {f.finished:8.0f} runs/s")
        print(f"  ratio daemon / baseline     {f.finished / direct:8.2f}")
        print(f"  daemon CPU per run          {f.cpu_per_run * 1e6:8.0f} us (first fire to last run, with the spawner)")
        print(
            f"  fire -> finish, saturated   p50 {p(0.5, f.latencies):7.1f} ms   p99 {p(0.99, f.latencies):7.1f} ms   "
            f"mean {statistics.fmean(f.latencies) * 1000:7.1f} ms"
        )
        print(f"  fire -> finish, 50 fires/s  p50 {p(0.5, f.unloaded):7.1f} ms   p99 {p(0.99, f.unloaded):7.1f} ms")


if __name__ == "__main__":
    main()
