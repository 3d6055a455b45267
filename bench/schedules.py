"""10,000 schedules in one daemon: memory, idle CPU between fires, and fire lag over a burst.

Every schedule is `* * * * *`, so each minute boundary is a burst of 10,000 simultaneous
due slots. Fire lag is the run's created_at (when its slot was committed) minus its
nominal time, read back from the store. Runs queue behind one parked command, so the
figures are the scheduler's, not the agents'. Idle CPU is the daemon's CPU time over a
window between bursts. Loopback only, bounded (about three minutes).

    .venv/bin/python bench/schedules.py [--schedules 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopback import free_port


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        (root / "defs").mkdir()
        docs = ["agent: {id: parked, type: command, command: [sleep, '600'], max_concurrent: 1}"]
        docs += [
            f"trigger: {{id: s{i:05d}, type: schedule, schedule: {{cron: '* * * * *'}}, agent: {{id: parked}}}}"
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
            # The burst to measure is the first minute boundary at least 25 s away, so that
            # the quiet stretch before it (after any earlier burst settles) measures idle CPU.
            now = datetime.now(UTC)
            boundary = (now + timedelta(seconds=25 + 60)).replace(second=0, microsecond=0)
            quiet_from = boundary - timedelta(seconds=20)
            time.sleep(max((quiet_from - datetime.now(UTC)).total_seconds(), 0))
            window = max((boundary - datetime.now(UTC)).total_seconds() - 2, 1.0)
            cpu_before = cpu_seconds(daemon.pid)
            time.sleep(window)
            idle_cpu = (cpu_seconds(daemon.pid) - cpu_before) / window * 100
            time.sleep(max((boundary - datetime.now(UTC)).total_seconds(), 0) + 1)
            nominal = boundary.strftime("%Y-%m-%dT%H:%M:%S.000Z")
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
    lags = sorted((datetime.fromisoformat(r["created_at"]) - boundary).total_seconds() for r in runs)

    def pct(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))] * 1000

    print(f"schedules                  {args.schedules} (every minute: one burst of {args.schedules} slots)")
    print(f"start to ready             {ready:.1f} s (loading, validating and planning every schedule)")
    print(f"memory (RSS)               {rss_loaded:.0f} MiB loaded, {rss_after:.0f} MiB after a burst")
    print(f"idle CPU between bursts    {idle_cpu:.2f} % of one core (over {window:.0f} s)")
    print(f"slots of the burst stored  {len(runs)} of {args.schedules}")
    print(f"fire lag                   p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms, max {lags[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
