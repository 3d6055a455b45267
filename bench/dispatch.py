"""Dispatch throughput: N fires of a trivial command agent through the admin API of a real daemon.

Baseline, measured in the same run: spawning the same command N times directly with
asyncio at the same concurrency. Prints runs/s for both, the ratio, and the time from
fire to finish (the run's created_at to finished_at, as the store recorded them), and the
daemons' CPU time per run over the saturated phase, their spawner processes' included (less
sensitive than rates to other load on the machine). The machine's pace drifts, so `--rounds`
(3) SQLite rounds each run the daemon between two baselines and compare it with their mean; it
prints every round's ratio and their median, and the median round in full. The daemon's rate is
to the poll (every 20 ms) that finds every run final, and the check that reads them all back is
not timed. The SQLite file is in .triggerd/ beside the settings file, as in the default
configuration (config/triggerd.yaml).

With `--store postgresql` the same fires then go, in the same run, to daemons on a throwaway
PostgreSQL server (bench/postgres.py); with `--daemons N`, to N daemons sharing it, each fire
to the next daemon in turn. `--concurrency` is per daemon (`limits.max_concurrent_runs`); the
trigger's `max_concurrent` and the number of firing clients are concurrency x daemons.

    .venv/bin/python bench/dispatch.py [--fires 2000] [--rounds 3] [--concurrency 16] [--sync normal|full]
        [--store postgresql [--daemons 2]]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from loopback import free_port, start_daemon, wait_port
from postgres import start_postgres

COMMAND = ["true"]


async def baseline(fires: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            process = await asyncio.create_subprocess_exec(
                *COMMAND,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await process.communicate(b"{}")

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(fires)))
    return fires / (time.perf_counter() - start)


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


async def finished_runs(session: aiohttp.ClientSession, url: str, ids: list[str]) -> list[float]:
    """Wait until every run is final; return fire -> finish seconds of each, from the store's timestamps."""
    wanted = set(ids)
    await all_finished(session, url)
    runs: dict[str, dict[str, object]] = {}
    before = None
    while True:
        query = "?limit=1000&trigger=bench" + (f"&before={before}" if before else "")
        async with session.get(f"{url}/v1/runs{query}") as resp:
            page = await resp.json()
        runs.update({r["id"]: r for r in page["runs"] if r["id"] in wanted})
        before = page["next_before"]
        if not before:
            break
    assert len(runs) == len(wanted), (len(runs), len(wanted))
    bad = [r for r in runs.values() if r["status"] != "completed"]
    assert not bad, bad[:3]
    return [
        (datetime.fromisoformat(str(r["finished_at"])) - datetime.fromisoformat(str(r["created_at"]))).total_seconds()
        for r in runs.values()
    ]


async def fire(session: aiohttp.ClientSession, urls: Iterator[str]) -> str:
    url = next(urls)
    async with session.post(f"{url}/v1/triggers/bench/fire", json={"input": {}}) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["run_id"])


async def through_daemon(urls: list[str], fires: int, concurrency: int) -> tuple[float, float, list[float]]:
    """All fires as fast as `concurrency` clients can send them: throughput, and latency under a backlog."""
    gate = asyncio.Semaphore(concurrency)
    turn = itertools.cycle(urls)
    async with aiohttp.ClientSession() as session:

        async def gated() -> str:
            async with gate:
                return await fire(session, turn)

        start = time.perf_counter()
        ids = await asyncio.gather(*(gated() for _ in range(fires)))
        fired = time.perf_counter() - start
        await all_finished(session, urls[0])  # any daemon reads the shared store
        total = time.perf_counter() - start  # to the poll that found every run final, within 20 ms
        latencies = await finished_runs(session, urls[0], ids)  # the check and the figures: not timed
    return fires / fired, fires / total, latencies


async def paced(urls: list[str], fires: int, rate: float) -> list[float]:
    """Fires at a steady rate well below capacity: the latency of one run with no backlog."""
    turn = itertools.cycle(urls)
    async with aiohttp.ClientSession() as session:
        ids = []
        for _ in range(fires):
            ids.append(await fire(session, turn))
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
    cpu_per_run: float  # every daemon's, over the saturated phase
    latencies: list[float]
    unloaded: list[float]


def through_store(root: Path, store: str, daemons: int, args: argparse.Namespace) -> Figures:
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
                f"  max_concurrent: {clients}\n  max_queued: {args.fires}\n"
            )
            processes.append(start_daemon(folder, {**os.environ}))
        for port in ports:
            wait_port(port)
        cpu_before = sum(daemon_cpu_seconds(process.pid) for process in processes)
        accepted, finished, latencies = asyncio.run(through_daemon(urls, args.fires, clients))
        cpu_per_run = (sum(daemon_cpu_seconds(process.pid) for process in processes) - cpu_before) / args.fires
        unloaded = asyncio.run(paced(urls, 200, 50.0))
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    return Figures(accepted, finished, cpu_per_run, sorted(latencies), sorted(unloaded))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sync", choices=["normal", "full"], default="normal")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--daemons", type=int, default=1, help="daemons sharing the PostgreSQL store")
    parser.add_argument("--rounds", type=int, default=3, help="SQLite rounds, each between two baselines")
    args = parser.parse_args()
    if args.daemons != 1 and args.store != "postgresql":
        parser.error("--daemons needs --store postgresql (SQLite is one daemon's file)")
    figures: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        # The machine's pace drifts (the spawn baseline moved 1,100-1,700/s within an hour): each
        # round runs the daemon between two baselines and is compared with their mean.
        baselines = [asyncio.run(baseline(args.fires, args.concurrency))]
        rounds: list[tuple[Figures, float]] = []
        for n in range(args.rounds):
            measured = through_store(root / f"round-{n}", "sqlite:///./.triggerd/state.db", 1, args)
            baselines.append(asyncio.run(baseline(args.fires, args.concurrency)))
            rounds.append((measured, (baselines[-2] + baselines[-1]) / 2))
        ratios = sorted(f.finished / b for f, b in rounds)
        median = sorted(rounds, key=lambda r: r[0].finished / r[1])[len(rounds) // 2]
        figures["sqlite"], direct = median
        if args.store == "postgresql":
            database = start_postgres(free_port())
            try:
                name = "postgresql" + (f" x{args.daemons}" if args.daemons > 1 else "")
                figures[name] = through_store(root, database.database(), args.daemons, args)
            finally:
                database.remove()

    def p(q: float, values: list[float]) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    print(f"fires                         {args.fires} (concurrency {args.concurrency} per daemon, sync {args.sync})")
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
        print(f"  daemon CPU per run          {f.cpu_per_run * 1e6:8.0f} us (saturated phase, with the spawner)")
        print(
            f"  fire -> finish, saturated   p50 {p(0.5, f.latencies):7.1f} ms   p99 {p(0.99, f.latencies):7.1f} ms   "
            f"mean {statistics.fmean(f.latencies) * 1000:7.1f} ms"
        )
        print(f"  fire -> finish, 50 fires/s  p50 {p(0.5, f.unloaded):7.1f} ms   p99 {p(0.99, f.unloaded):7.1f} ms")


if __name__ == "__main__":
    main()
