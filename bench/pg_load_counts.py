"""How the PostgreSQL store counts a trigger's runs in flight: counter rows kept by triggers, or the indexes.

`trigger_loads` (overlap admission: one read per firing, reused for 0.5 s) and the poll's queue
depth need each trigger's running and pending counts. The store keeps them in `trigger_load`,
one row per trigger and writer connection, maintained by triggers on `runs`
(store/pg_migrations.py, migration 3); the alternative is counting the partial indexes. On a
store with a queue of Q pending runs of one trigger this measures:

- the read: `PostgresStore.trigger_loads` (counter rows) against the same counts taken from the
  partial index `(trigger_id) WHERE status = 'pending'`;
- the write side: `create_run` at concurrency 32 with the counting triggers, and with them
  disabled (what counting the indexes would leave the writes to pay).

    .venv/bin/python bench/pg_load_counts.py [--url postgresql://...] [-q 100000] [-n 3000]

Without --url it starts a throwaway server the way the tests do (tests/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from triggerd.runs import Run, RunStatus, Source, new_run_id
from triggerd.store.postgres import PostgresStore

INDEX_COUNT = (
    "SELECT trigger_id, count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending') "
    "FROM runs WHERE status IN ('pending', 'running') AND trigger_id = ANY(%s) GROUP BY trigger_id"
)


async def timed_reads(store: PostgresStore, url: str, rounds: int = 100) -> tuple[float, float]:
    rows = []
    for _ in range(rounds):
        started = time.perf_counter()
        await store.trigger_loads(["hot", "cold"])
        rows.append(time.perf_counter() - started)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        index = []
        for _ in range(rounds):
            started = time.perf_counter()
            await (await conn.execute(INDEX_COUNT, (["hot", "cold"],))).fetchall()
            index.append(time.perf_counter() - started)
    return statistics.median(rows) * 1000, statistics.median(index) * 1000


async def creates(store: PostgresStore, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n // 32):
        await asyncio.gather(*(store.create_run(new_run()) for _ in range(32)))
    return (n // 32) * 32 / (time.perf_counter() - started)


def new_run() -> Run:
    return Run(new_run_id(), "hot", "a", RunStatus.PENDING, {}, Source.MANUAL, "2026-01-01T00:00:00.000Z")


async def measure(url: str, queue: int, n: int) -> dict[str, Any]:
    store = PostgresStore(url)
    await store.open()
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("CREATE INDEX runs_pending_by_trigger ON runs (trigger_id) WHERE status = 'pending'")
            await conn.execute(
                "INSERT INTO runs (id, trigger_id, agent_id, status, input, source, created_at) "
                "SELECT 'q' || lpad(g::text, 9, '0'), 'hot', 'a', 'pending', '{}', 'manual', "
                "'2026-01-01T00:00:00.000Z' FROM generate_series(1, %s) AS g",
                (queue,),
            )
            await conn.execute("VACUUM ANALYZE runs")
        rows_ms, index_ms = await timed_reads(store, url)
        with_triggers = await creates(store, n)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("ALTER TABLE runs DISABLE TRIGGER USER")
        without = await creates(store, n)
    finally:
        await store.close()
    return {
        "queue": queue,
        "trigger_loads_ms_counter_rows": round(rows_ms, 3),
        "trigger_loads_ms_index_counts": round(index_ms, 3),
        "create_run_per_s_with_counting_triggers": round(with_triggers),
        "create_run_per_s_without": round(without),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url")
    parser.add_argument("-q", "--queue", type=int, default=100_000)
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        from tests.servers import _start_postgres

        server = _start_postgres()
        url = server.database()
    try:
        for queue in (0, 10_000, args.queue):
            fresh = server.database() if server is not None else url
            print(asyncio.run(measure(fresh, queue, args.n)))
    finally:
        if server is not None:
            server.stop("immediate")


if __name__ == "__main__":
    main()
