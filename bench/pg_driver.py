"""Which PostgreSQL driver for the store: psycopg 3 (pool, pipeline) or asyncpg, measured.

Each driver inserts N runs in batches of B (one transaction per batch, the runs as one
`INSERT ... SELECT FROM unnest(arrays)` with ON CONFLICT DO NOTHING RETURNING, the statement
PostgresStore sends for a group commit), then reads them back in pages of 500, and finally
sends B single-row transactions one after the other (the latency of a lone firing).
Then the chosen store itself: PostgresStore.create_run with idempotency keys at concurrency
1, 32 and 300 (how many firings share a commit), beside SqliteStore on a temporary file.

    .venv/bin/python bench/pg_driver.py --url postgresql://triggerd@127.0.0.1:5432/bench [-n 20000] [-b 100]

Without --url it starts a throwaway server (bench/postgres.py, the tests' starter too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from triggerd.runs import new_run_id

DDL = """CREATE TABLE IF NOT EXISTS bench_runs (
    id TEXT COLLATE "C" PRIMARY KEY, trigger_id TEXT NOT NULL, status TEXT NOT NULL,
    input TEXT NOT NULL, created_at TEXT NOT NULL)"""
INSERT = (
    "INSERT INTO bench_runs (id, trigger_id, status, input, created_at) "
    "SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::text[]) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
READ = "SELECT id, trigger_id, status, input, created_at FROM bench_runs WHERE id > {} ORDER BY id LIMIT 500"


def columns(batch: int) -> list[list[str]]:
    ids = [new_run_id() for _ in range(batch)]
    body = json.dumps({"order": 1234, "items": ["a", "b", "c"], "customer": {"id": 7, "tier": "gold"}})
    return [ids, ["orders"] * batch, ["pending"] * batch, [body] * batch, ["2026-01-01T00:00:00.000Z"] * batch]


async def with_psycopg(url: str, n: int, batch: int) -> dict[str, float]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_runs")
        await conn.execute(DDL)
        insert = INSERT.format(*["%b"] * 5)

        async def batches() -> None:
            for _ in range(n // batch):
                async with conn.transaction():
                    cur = await conn.execute(insert, columns(batch))
                    assert len(await cur.fetchall()) == batch

        async def read() -> None:
            last, seen = "", 0
            while True:
                rows = await (await conn.execute(READ.format("%s"), (last,))).fetchall()
                if not rows:
                    break
                seen, last = seen + len(rows), rows[-1][0]
            assert seen == n

        async def singles() -> None:
            async with conn.pipeline():  # what a lone firing costs: BEGIN, INSERT, COMMIT pipelined
                for _ in range(batch):
                    async with conn.transaction():
                        await conn.execute(insert, columns(1))

        return await measure(n, batch, batches, read, singles)


async def with_asyncpg(url: str, n: int, batch: int) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_runs")
        await conn.execute(DDL)
        insert = INSERT.format(*[f"${i}" for i in range(1, 6)])

        async def batches() -> None:
            for _ in range(n // batch):
                async with conn.transaction():
                    assert len(await conn.fetch(insert, *columns(batch))) == batch

        async def read() -> None:
            last, seen = "", 0
            while True:
                rows = await conn.fetch(READ.format("$1"), last)
                if not rows:
                    break
                seen, last = seen + len(rows), rows[-1][0]
            assert seen == n

        async def singles() -> None:
            for _ in range(batch):
                async with conn.transaction():
                    await conn.fetch(insert, *columns(1))

        return await measure(n, batch, batches, read, singles)
    finally:
        await conn.close()


async def measure(
    n: int, batch: int, *phases: Callable[[], Awaitable[None]]
) -> dict[str, float]:  # batches, read, singles
    figures = []
    for phase in phases:
        start = time.perf_counter()
        await phase()
        figures.append(time.perf_counter() - start)
    return {
        "insert runs/s": n / figures[0],
        "read runs/s": n / figures[1],
        "lone firing ms": 1000 * figures[2] / batch,
    }


async def group_commit(url: str, n: int = 3000) -> list[str]:
    """create_run with keys through each store at three concurrencies: runs/s and runs per commit."""
    import tempfile
    from dataclasses import replace

    from triggerd.config.models import StoreSettings
    from triggerd.runs import Run, RunStatus, Source
    from triggerd.store import open_store

    template = Run("", "orders", "a", RunStatus.PENDING, {"n": 1}, Source.WEBHOOK, "2026-01-01T00:00:00.000Z")
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        for name, store_url in (("postgresql", url), ("sqlite", f"sqlite:///{folder}/bench.db")):
            store: Any = open_store(StoreSettings(store_url))
            await store.open()
            for concurrency in (1, 32, 300):
                commits, start = store.commits, time.perf_counter()
                for i in range(0, n, concurrency):
                    await asyncio.gather(
                        *(
                            store.create_run(
                                replace(template, id=new_run_id(), idempotency_key=f"{concurrency}-{i}-{j}"), 60
                            )
                            for j in range(concurrency)
                        )
                    )
                elapsed = time.perf_counter() - start
                lines.append(
                    f"{name:10} concurrency {concurrency:3}: {n / elapsed:8,.0f} runs/s, "
                    f"{n / (store.commits - commits):5.1f} runs per commit"
                )
            await store.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url")
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("-b", "--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server: Any = None
    url = args.url
    if url is None:
        from loopback import free_port
        from postgres import start_postgres

        server = start_postgres(free_port())
        url = server.database()
    try:
        for name, bench in (("psycopg", with_psycopg), ("asyncpg", with_asyncpg)):
            rounds = [asyncio.run(bench(url, args.n, args.batch)) for _ in range(args.rounds)]
            best = {k: (min if k.endswith("ms") else max)(r[k] for r in rounds) for k in rounds[0]}
            print(f"{name:8} " + "  ".join(f"{k} {v:,.1f}" for k, v in best.items()))
        print("\n".join(asyncio.run(group_commit(url))))
    finally:
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
