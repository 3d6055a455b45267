"""Dispatch throughput: N fires of a trivial command agent through the admin API of a real daemon.

Baseline, measured in the same run: spawning the same command N times directly with
asyncio at the same concurrency. Prints runs/s for both, the ratio, and the time from
fire to finish (the run's created_at to finished_at, as the store recorded them), and the
daemon's CPU time per run over the saturated phase (less sensitive than rates to other load on
the machine).

    .venv/bin/python bench/dispatch.py [--fires 2000] [--concurrency 16] [--sync normal|full]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
from loopback import free_port, wait_port

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


async def finished_runs(session: aiohttp.ClientSession, url: str, ids: list[str]) -> list[float]:
    """Wait until every run is final; return fire -> finish seconds of each, from the store's timestamps."""
    wanted = set(ids)
    while True:
        runs: dict[str, dict[str, object]] = {}
        before = None
        while True:
            query = "?limit=1000&trigger=bench" + (f"&before={before}" if before else "")
            async with session.get(f"{url}/v1/runs{query}") as resp:
                page = await resp.json()
            runs.update({r["id"]: r for r in page["runs"] if r["id"] in wanted and r["finished_at"]})
            before = page["next_before"]
            if not before:
                break
        if len(runs) == len(wanted):
            break
        await asyncio.sleep(0.1)
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


async def through_daemon(url: str, fires: int, concurrency: int) -> tuple[float, float, list[float]]:
    """All fires as fast as `concurrency` clients can send them: throughput, and latency under a backlog."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def gated() -> str:
            async with gate:
                return await fire(session, url)

        start = time.perf_counter()
        ids = await asyncio.gather(*(gated() for _ in range(fires)))
        fired = time.perf_counter() - start
        latencies = await finished_runs(session, url, ids)
        total = time.perf_counter() - start
    return fires / fired, fires / total, latencies


async def paced(url: str, fires: int, rate: float) -> list[float]:
    """Fires at a steady rate well below capacity: the latency of one run with no backlog."""
    async with aiohttp.ClientSession() as session:
        ids = []
        for _ in range(fires):
            ids.append(await fire(session, url))
            await asyncio.sleep(1 / rate)
        return await finished_runs(session, url, ids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sync", choices=["normal", "full"], default="normal")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        (root / "defs").mkdir()
        (root / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "sqlite:///./state.db", sync: {args.sync}}}\n'
            f"definitions: [defs]\nlimits: {{max_concurrent_runs: {args.concurrency}}}\n"
            "logging: {level: warning, format: json}\n"
        )
        (root / "defs" / "bench.yaml").write_text(
            f"agent: {{id: trivial, type: command, command: {COMMAND}}}\n---\n"
            "trigger:\n  id: bench\n  type: event\n  event: {pattern: never}\n  agent: {id: trivial}\n"
            f"  max_concurrent: {args.concurrency}\n  max_queued: {args.fires}\n"
        )
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        daemon = subprocess.Popen(
            [sys.executable, *profile, "-m", "triggerd", "run", "--config", str(root / "triggerd.yaml")],
            cwd=root,
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_port(port)
            direct = asyncio.run(baseline(args.fires, args.concurrency))
            cpu_before = cpu_seconds(daemon.pid)
            accepted, finished, latencies = asyncio.run(through_daemon(url, args.fires, args.concurrency))
            cpu_per_run = (cpu_seconds(daemon.pid) - cpu_before) / args.fires
            unloaded = sorted(asyncio.run(paced(url, 200, 50.0)))
        finally:
            daemon.terminate()
            daemon.wait(30)
    latencies.sort()

    def p(q: float, values: list[float] = latencies) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    print(f"fires                         {args.fires} (concurrency {args.concurrency}, store sync {args.sync})")
    print(f"baseline: asyncio spawn       {direct:8.0f} runs/s")
    print(f"daemon: fires accepted        {accepted:8.0f} /s  (202 after commit)")
    print(f"daemon: runs finished         {finished:8.0f} runs/s")
    print(f"ratio daemon / baseline       {finished / direct:8.2f}")
    print(f"daemon CPU per run            {cpu_per_run * 1e6:8.0f} us (saturated phase, fire to finish)")
    print(
        f"fire -> finish, saturated     p50 {p(0.5) * 1000:7.1f} ms   p99 {p(0.99) * 1000:7.1f} ms   "
        f"mean {statistics.fmean(latencies) * 1000:7.1f} ms"
    )
    print(
        f"fire -> finish, 50 fires/s    p50 {p(0.5, unloaded) * 1000:7.1f} ms   p99 {p(0.99, unloaded) * 1000:7.1f} ms"
    )


if __name__ == "__main__":
    main()
