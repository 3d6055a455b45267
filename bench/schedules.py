"""10,000 schedules in one daemon: memory, idle CPU between fires, and fire lag over a burst.

Every schedule is `* * * * *`, so each minute boundary is a burst of 10,000 simultaneous
due slots. Two lags are measured for the burst: the commit lag, when the store holds a slot
(the script reads the daemon's SQLite file every 10 ms, read-only, while it fires: the time at
which 50 %, 99 % and all of the burst's slots were committed), and the fire lag, each run's
created_at (stamped just before its commit is queued) minus its due time, read back from the
store. With `--spread`, every schedule has `jitter_seconds: 59`, so the same 10,000 slots fall
due one by one over the minute (each at its nominal time plus its jitter, computed as the
daemon does): the fire lag is then each run's created_at minus that due time. Runs queue
behind one parked command, so the figures are the scheduler's, not the agents'. The minute
measured is the second after the daemon is ready (every schedule has fired once). Idle CPU is
the daemon's CPU time over a window between bursts (with --spread, the CPU the previous
minute's slots cost as they fell due). Loopback only, bounded (three to four minutes).

    .venv/bin/python bench/schedules.py [--schedules 10000] [--spread]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopback import free_port

from triggerd.sources.slots import jitter

JITTER_SECONDS = 59


def get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def runs_of_slot(url: str, nominal: str) -> list[dict]:  # type: ignore[type-arg]
    found, before = [], None
    while True:
        page = get(f"{url}/v1/runs?limit=1000" + (f"&before={before}" if before else ""))
        found += [r for r in page["runs"] if r["nominal_time"] == nominal]
        before = page["next_before"]
        if not before or page["runs"][-1]["nominal_time"] < nominal:
            return found


def committed_over_time(db: Path, nominal: str, wanted: int, seconds: float) -> list[tuple[float, int]]:
    """(seconds since the script's call, slots of `nominal` committed) every 10 ms until all are there."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            (count,) = conn.execute("SELECT count(*) FROM schedule_slots WHERE nominal = ?", (nominal,)).fetchone()
            samples.append((time.monotonic() - start, count))
            if count >= wanted:
                break
            time.sleep(0.01)
    finally:
        conn.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--spread", action="store_true", help=f"jitter_seconds: {JITTER_SECONDS} on every schedule")
    args = parser.parse_args()
    spread = f", jitter_seconds: {JITTER_SECONDS}" if args.spread else ""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        (root / "defs").mkdir()
        docs = ["agent: {id: parked, type: command, command: [sleep, '600'], max_concurrent: 1}"]
        docs += [
            f"trigger: {{id: s{i:05d}, type: schedule, schedule: {{cron: '* * * * *'{spread}}}, agent: {{id: parked}}}}"
            for i in range(args.schedules)
        ]
        (root / "defs" / "schedules.yaml").write_text("\n---\n".join(docs) + "\n")
        (root / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "sqlite:///./state.db"}}\ndefinitions: [defs]\n'
            "logging: {level: warning, format: json}\nlimits: {shutdown_grace_seconds: 0}\n"
        )
        url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        daemon = subprocess.Popen(
            [sys.executable, *profile, "-m", "triggerd", "run", "--config", str(root / "triggerd.yaml")],
            cwd=root,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    if get(url + "/readyz")["status"] == "ready":
                        break
                except OSError:
                    time.sleep(0.1)
            ready = time.perf_counter() - started
            rss_loaded = rss_mib(daemon.pid)
            # The minute to measure is the second boundary after the daemon is ready: a steady
            # state (every schedule fired once before, its run queued), and, in a burst, the quiet
            # stretch before it (after the first burst settled) measures idle CPU. With --spread
            # that stretch is the previous minute's slots falling due: the CPU they cost.
            now = datetime.now(UTC)
            boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=2)
            quiet_from = boundary - timedelta(seconds=20)
            time.sleep(max((quiet_from - datetime.now(UTC)).total_seconds(), 0))
            window = max((boundary - datetime.now(UTC)).total_seconds() - 2, 1.0)
            cpu_before = cpu_seconds(daemon.pid)
            time.sleep(window)
            idle_cpu = (cpu_seconds(daemon.pid) - cpu_before) / window * 100
            nominal = boundary.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            time.sleep(max((boundary - datetime.now(UTC)).total_seconds() - 0.05, 0))
            polled_from = (datetime.now(UTC) - boundary).total_seconds()
            if args.spread:  # no commit lag to time: the slots are spread, and polling would load the CPU
                samples = []
                time.sleep(max((boundary - datetime.now(UTC)).total_seconds() + JITTER_SECONDS + 3, 0))
            else:
                samples = committed_over_time(root / "state.db", nominal, args.schedules, 50)
            deadline = time.monotonic() + 50
            while True:
                runs = runs_of_slot(url, nominal)
                if len(runs) >= args.schedules or time.monotonic() > deadline:
                    break
                time.sleep(1)
            rss_after = rss_mib(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(60)

    def due(run: dict) -> datetime:  # type: ignore[type-arg]
        if not args.spread:
            return boundary
        return boundary + timedelta(seconds=jitter(run["trigger_id"], boundary, JITTER_SECONDS, 60.0))

    lags = sorted((datetime.fromisoformat(r["created_at"]) - due(r)).total_seconds() for r in runs)

    def committed_by(share: float) -> str:
        wanted = share * args.schedules
        at = next((t for t, n in samples if n >= wanted), None)
        return "not within the wait" if at is None else f"{(polled_from + at) * 1000:.0f} ms"

    def pct(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))] * 1000

    shape = f"spread over each minute by jitter_seconds: {JITTER_SECONDS}" if args.spread else "one burst"
    print(f"schedules                  {args.schedules} (every minute: {shape} of {args.schedules} slots)")
    print(f"start to ready             {ready:.1f} s (loading, validating and planning every schedule)")
    print(f"memory (RSS)               {rss_loaded:.0f} MiB loaded, {rss_after:.0f} MiB after a burst")
    quiet = "CPU while slots fall due" if args.spread else "idle CPU between bursts "  # see above
    print(f"{quiet}   {idle_cpu:.2f} % of one core (over {window:.0f} s)")
    print(f"slots of the burst stored  {len(runs)} of {args.schedules}")
    if not args.spread:
        print(
            f"committed after the minute 50 % by {committed_by(0.5)}, 99 % by {committed_by(0.99)}, "
            f"all by {committed_by(1.0)} (polled every 10 ms)"
        )
    print(f"fire lag (created_at - due) p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms, max {lags[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
