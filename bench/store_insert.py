"""What the idempotency index costs the store: new runs inserted in batches, with and without keys.

Runs the store's own batch insert (the writer thread's code, on one connection, no threads)
on a fresh SQLite file three ways: runs without a key (the baseline), runs with random UUID
keys (GitHub's delivery ids are like these), and runs with keys that grow in order. Prints the
CPU time per run, cumulative at each third of --runs, and the ratios to the baseline.

    .venv/bin/python bench/store_insert.py [--runs 60000] [--batch 10]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from triggerd.runs import Run, RunStatus, Source, new_run_id
from triggerd.store.rows import NewRun
from triggerd.store.sqlite import _insert_runs, _migrate

NOW = "2026-11-21T10:00:00.000Z"
INPUT = {"number": 1347, "title": "Amazing new feature", "author": "octocat", "labels": ["enhancement"]}


def measure(path: Path, runs: int, batch: int, key: Callable[[int], str | None]) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    _migrate(conn)
    marks, started, done = [], time.process_time(), 0
    while done < runs:
        new = []
        for i in range(done, done + batch):
            k = key(i)
            run = Run(
                new_run_id(), "bench", "parked", RunStatus.PENDING, dict(INPUT), Source.WEBHOOK, NOW, idempotency_key=k
            )
            new.append(NewRun(run, 86400.0 if k else 0.0, NOW))
        conn.execute("BEGIN IMMEDIATE")
        _insert_runs(conn, new)
        conn.execute("COMMIT")
        done += batch
        if done % (runs // 3) == 0:
            marks.append((time.process_time() - started) / done * 1e6)
    conn.close()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60000)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    ways: dict[str, Callable[[int], str | None]] = {
        "no key (baseline)": lambda i: None,
        "random UUID keys": lambda i: str(uuid.uuid4()),
        "keys in order": lambda i: f"delivery-{i:012d}",
    }
    thirds = [args.runs // 3 * n for n in (1, 2, 3)]
    print(f"{'':20} CPU us per run after {', '.join(f'{n:,}' for n in thirds)} runs (batches of {args.batch})")
    baseline: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for n, (name, key) in enumerate(ways.items()):
            marks = measure(Path(folder) / f"{n}.db", args.runs, args.batch, key)
            baseline = baseline or marks
            ratios = ", ".join(f"{m / b:.2f}x" for m, b in zip(marks, baseline, strict=True))
            print(f"{name:20} {', '.join(f'{m:6.1f}' for m in marks)}   ({ratios})")


if __name__ == "__main__":
    main()
