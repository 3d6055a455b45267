"""Load and crash soak: signed webhooks, schedules and events at once, while the daemon is SIGKILLed.

The daemon runs in its own process on loopback; this script is the load and the killer. For
`--seconds` it sends GitHub-signed webhooks (each with its own X-GitHub-Delivery, sent again
with the same delivery id until one answer acknowledges it, as GitHub redelivers), events to
POST /v1/events (never sent again: an event has no idempotency key, so an unanswered one is
counted apart), adds entries to a Redis stream that a `redis-stream` source consumes (the
machine's `redis-server`, never killed), and lets a few every-minute schedules fire; every few
seconds, at a random moment, it kills the daemon with SIGKILL and starts it again. Then it lets the daemon finish,
stops it, and counts from the store (the SQLite file, or the PostgreSQL database with psycopg):

- accepted webhooks / events: requests answered 202 (or 200 duplicate) with a run id;
- lost: an accepted request with no run; duplicated: one with more than one run;
- not final: runs still pending or running; mismatched: a run id other than the one acknowledged;
- schedule slots: every minute from the first recorded slot to the last one due has exactly one
  record (a run, or `skipped`/`missed` for a slot that fell in a downtime);
- stream messages: every entry added has exactly one run (lost / duplicated count them too) and
  is acknowledged at the end (the entries a killed daemon held are claimed after `claim_idle`).

It exits 1 if any of lost, duplicated, not final, mismatched or missing slots is not zero.

With `--store postgresql` the daemon uses a throwaway PostgreSQL server (bench/postgres.py);
with `--daemons N`, N daemons share it, all with the same definitions (so every schedule is
due on each of them). Each webhook request, first delivery or redelivery, and each event goes
to the next daemon in turn; each kill hits one daemon, chosen at random, and starts it again
before the next kill.

    .venv/bin/python bench/soak.py [--seconds 180] [--rate 60] [--event-rate 15] [--stream-rate 15]
        [--seed 1] [--store postgresql [--daemons 2]]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import redis
from loopback import free_port, start_daemon, start_redis, wait_port
from postgres import start_postgres
from redis.asyncio import Redis as AsyncRedis

SECRET = "soak-secret"
SCHEDULES = 4
FINAL = ("completed", "failed", "timed_out", "cancelled", "skipped")

DEFINITIONS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: hook
  type: webhook
  webhook:
    authentication: {type: github, secret: "${SOAK_SECRET}"}
  agent:
    id: echo
    input_mapping:
      seq: {path: $.body.seq, required: true}
  max_concurrent: 8
  max_queued: 1000000
---
trigger:
  id: tick
  type: event
  event: {pattern: soak.tick}
  agent:
    id: echo
    input_mapping:
      seq: $.event.data.seq
  max_concurrent: 8
  max_queued: 1000000
"""

STREAM = """---
source:
  id: queue
  type: redis-stream
  url: "redis://127.0.0.1:{port}/0"
  stream: soak
  start: "0"
  claim_idle: 2s
  event: {{type: soak.queued, id: $.body.id}}
---
trigger:
  id: queued
  type: event
  event: {{pattern: soak.queued, source: queue}}
  agent:
    id: echo
    input_mapping:
      seq: $.event.data.seq
  max_concurrent: 8
  max_queued: 1000000
"""

SCHEDULE = """---
trigger:
  id: every-minute-{n}
  type: schedule
  schedule: {{cron: "* * * * *", catchup_window: 1h}}
  agent: {{id: echo}}
"""


@dataclass
class Tally:
    webhooks_sent: int = 0
    webhook_attempts: int = 0
    accepted_webhooks: dict[str, str] = field(default_factory=dict)  # delivery id -> acknowledged run id
    unanswered_webhooks: set[str] = field(default_factory=set)
    events_sent: int = 0
    accepted_events: dict[int, str] = field(default_factory=dict)  # seq -> acknowledged run id
    unanswered_events: set[int] = field(default_factory=set)
    stream_added: set[int] = field(default_factory=set)  # entries the broker took (XADD answered)
    statuses: Counter[int] = field(default_factory=Counter)
    kills: int = 0


class Daemon:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "SOAK_SECRET": SECRET}

    def start(self) -> None:
        with (self.root / "daemon.log").open("ab") as log:
            self.process = start_daemon(self.root, self.env, log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def up(self) -> None:
        """Started again if the load ended with it killed; listening."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        wait_port(self.port)


Store = Path | str  # the SQLite file, or the PostgreSQL URL


def fetch(store: Store, sql: str) -> list[tuple[Any, ...]]:
    """Every row of a query, read straight from the store (not through a daemon)."""
    if isinstance(store, Path):
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()
    import psycopg  # the [postgres] extra, installed with the test tools

    with psycopg.connect(store) as conn:
        return conn.execute(sql).fetchall()


SCHEDULES_YAML = "".join(SCHEDULE.format(n=n) for n in range(SCHEDULES))


def write_config(root: Path, port: int, store_url: str = "sqlite:///./state/triggerd.db", name: str = "") -> None:
    (root / "defs").mkdir(parents=True)
    instance = f", instance: {name}" if name else ""
    (root / "triggerd.yaml").write_text(
        f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "{store_url}"{instance}}}\n'
        "definitions: [defs]\nlimits: {max_concurrent_runs: 16}\nlogging: {format: json, level: warning}\n"
    )


async def send_webhook(
    session: aiohttp.ClientSession, urls: Iterator[str], seq: int, tally: Tally, stop_at: float
) -> None:
    """Send one delivery, again with the same id until an answer acknowledges it (or time is up)."""
    delivery = f"delivery-{seq}"
    body = json.dumps({"seq": seq, "action": "opened", "padding": "x" * 200}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    tally.webhooks_sent += 1
    while time.monotonic() < stop_at:
        tally.webhook_attempts += 1
        try:
            async with session.post(next(urls), data=body, headers=headers) as response:
                tally.statuses[response.status] += 1
                answer = await response.json(content_type=None)
                if response.status in (200, 202) and "run_id" in answer:
                    tally.accepted_webhooks[delivery] = answer["run_id"]
                    return
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
            tally.statuses[0] += 1  # refused, reset or cut off by the kill
        await asyncio.sleep(0.1)
    tally.unanswered_webhooks.add(delivery)


async def send_event(session: aiohttp.ClientSession, urls: Iterator[str], seq: int, tally: Tally) -> None:
    tally.events_sent += 1
    try:
        async with session.post(next(urls), json={"type": "soak.tick", "data": {"seq": seq}}) as response:
            tally.statuses[response.status] += 1
            answer = await response.json(content_type=None)
            if response.status == 202 and len(answer.get("run_ids", [])) == 1:
                tally.accepted_events[seq] = answer["run_ids"][0]
                return
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
        tally.statuses[0] += 1
    tally.unanswered_events.add(seq)  # committed or not: the sender cannot know, and does not resend


async def add_entry(client: AsyncRedis, seq: int, tally: Tally) -> None:
    await client.xadd("soak", {"body": json.dumps({"id": f"m-{seq}", "seq": seq})})
    tally.stream_added.add(seq)


async def paced(rate: float, seconds: float, send: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Call send(seq) at `rate` per second for `seconds`, each in its own task; wait for them all."""
    tasks = []
    started = time.monotonic()
    seq = 0
    while time.monotonic() - started < seconds:
        delay = started + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(seq)))
        seq += 1
    await asyncio.gather(*tasks)


async def killer(daemons: list[Daemon], seconds: float, rng: random.Random, tally: Tally) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(rng.uniform(2.0, 10.0))
        if time.monotonic() - started >= seconds:
            return
        # one daemon: the seed's kill times stay those of the one-daemon soak
        daemon = daemons[0] if len(daemons) == 1 else rng.choice(daemons)
        daemon.kill()
        tally.kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        daemon.start()


async def load(daemons: list[Daemon], args: argparse.Namespace, tally: Tally, redis_url: str | None) -> None:
    hooks = itertools.cycle([daemon.url + "/webhooks/hook" for daemon in daemons])
    events = itertools.cycle([daemon.url + "/v1/events" for daemon in daemons])
    rng = random.Random(args.seed)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        stop_at = time.monotonic() + args.seconds + 30  # deliveries still unacknowledged get 30 s more
        client = AsyncRedis.from_url(redis_url) if redis_url else None
        stream = [paced(args.stream_rate, args.seconds, lambda seq: add_entry(client, seq, tally))] if client else []
        await asyncio.gather(
            paced(args.rate, args.seconds, lambda seq: send_webhook(session, hooks, seq, tally, stop_at)),
            paced(args.event_rate, args.seconds, lambda seq: send_event(session, events, seq, tally)),
            *stream,
            killer(daemons, args.seconds, rng, tally),
        )
        if client is not None:
            await client.aclose()


def drained(redis_url: str, timeout: float = 120.0) -> int:
    """Wait until the source's group has read and acknowledged every entry; return how many are
    still unread or unacknowledged."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while True:
        groups = client.xinfo_groups("soak")
        left = sum(int(g["pending"]) + int(g.get("lag") or 0) for g in groups) if groups else len(client.xrange("soak"))
        if left == 0 or time.monotonic() > deadline:
            client.close()
            return left
        time.sleep(0.5)


def settle(store: Store, timeout: float = 120.0) -> int:
    """Wait until no run is pending or running; return how many still are."""
    deadline = time.monotonic() + timeout
    while True:
        open_runs = fetch(store, "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')")[0][0]
        if open_runs == 0 or time.monotonic() > deadline:
            return int(open_runs)
        time.sleep(0.5)


def account(store: Store, tally: Tally, first_up: datetime, last_due: datetime) -> dict[str, int]:
    rows = fetch(store, "SELECT id, trigger_id, status, idempotency_key, input, nominal_time FROM runs")
    hooks: dict[str, list[str]] = {}
    ticks: dict[int, list[str]] = {}
    queued: dict[int, list[str]] = {}
    slots: dict[str, list[str]] = {}
    not_final = skipped_slots = 0
    for run_id, trigger_id, status, key, input_, nominal in rows:
        not_final += status not in FINAL
        if trigger_id == "hook":
            hooks.setdefault(key, []).append(run_id)
        elif trigger_id == "tick":
            ticks.setdefault(json.loads(input_)["seq"], []).append(run_id)
        elif trigger_id == "queued":
            queued.setdefault(json.loads(input_)["seq"], []).append(run_id)
        else:
            slots.setdefault(f"{trigger_id} {nominal}", []).append(run_id)
            skipped_slots += status == "skipped"
    due = []  # every minute boundary after the first start, up to the last one due
    minute = first_up.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute <= last_due:
        due.append(minute.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        minute += timedelta(minutes=1)
    # A schedule's slots count from its first recorded one: catch-up starts from the last slot a
    # schedule recorded, so a boundary that passed before any was recorded (the daemon killed in
    # its first minute) is not known to be due (docs/schedules.md); with none recorded, all count.
    missing_slots = 0
    for n in range(SCHEDULES):
        first = min((key.split(" ", 1)[1] for key in slots if key.startswith(f"every-minute-{n} ")), default="")
        missing_slots += sum(1 for nominal in due if nominal >= first and f"every-minute-{n} {nominal}" not in slots)
    accepted: dict[tuple[str, str | int], str] = {("hook", k): v for k, v in tally.accepted_webhooks.items()}
    accepted.update({("tick", k): v for k, v in tally.accepted_events.items()})
    found: dict[tuple[str, str | int], list[str]] = {("hook", k): v for k, v in hooks.items()}
    found.update({("tick", k): v for k, v in ticks.items()})
    return {
        "runs stored": len(rows),
        "webhooks accepted": len(tally.accepted_webhooks),
        "events accepted": len(tally.accepted_events),
        "stream messages added": len(tally.stream_added),
        "schedule slots due": len(due) * SCHEDULES,
        "schedule slots recorded": sum(len(v) for v in slots.values()),
        "of them skipped as missed in a downtime": skipped_slots,
        "lost": sum(1 for key in accepted if key not in found)
        + sum(1 for seq in tally.stream_added if seq not in queued),
        "duplicated": sum(1 for runs in found.values() if len(runs) > 1)
        + sum(len(v) > 1 for v in slots.values())
        + sum(len(v) > 1 for v in queued.values()),
        "mismatched": sum(1 for key, run_id in accepted.items() if key in found and found[key] != [run_id]),
        "not final": not_final,
        "missing schedule slots": missing_slots,
        "unanswered events with a run": sum(1 for seq in tally.unanswered_events if seq in ticks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the load and the kills go on")
    parser.add_argument("--rate", type=float, default=60.0, help="new webhook deliveries per second")
    parser.add_argument("--event-rate", type=float, default=15.0, help="events per second")
    parser.add_argument("--stream-rate", type=float, default=15.0, help="Redis stream entries per second (0: none)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill times")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--daemons", type=int, default=1, help="daemons sharing the PostgreSQL store")
    args = parser.parse_args()
    if args.daemons != 1 and args.store != "postgresql":
        parser.error("--daemons needs --store postgresql (SQLite is one daemon's file)")
    database = start_postgres(free_port()) if args.store == "postgresql" else None
    broker: subprocess.Popen[bytes] | None = None
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            redis_url = None
            stream_yaml = ""
            if args.stream_rate > 0:
                (root / "redis").mkdir()
                broker, redis_port = start_redis(root / "redis")
                redis_url = f"redis://127.0.0.1:{redis_port}/0"
                stream_yaml = STREAM.format(port=redis_port)
            store: Store = root / "state" / "triggerd.db" if database is None else database.database()
            daemons = []
            for n in range(args.daemons):
                daemon = Daemon(root if database is None else root / f"daemon-{n}", free_port())
                if database is None:
                    write_config(daemon.root, daemon.port)
                else:
                    write_config(daemon.root, daemon.port, str(store), f"soak-{n}")
                (daemon.root / "defs" / "soak.yaml").write_text(DEFINITIONS + stream_yaml + SCHEDULES_YAML)
                daemons.append(daemon)
            for daemon in daemons:  # together: a daemon that starts resumes the unfinished runs it finds
                daemon.start()
            for daemon in daemons:
                wait_port(daemon.port)
            first_up = datetime.now(UTC)
            tally = Tally()
            began = time.monotonic()
            asyncio.run(load(daemons, args, tally, redis_url))
            for daemon in daemons:
                daemon.up()
            unread = drained(redis_url) if redis_url else 0
            still_open = settle(store)
            now = datetime.now(UTC)
            if now.second < 3:  # a slot that is due right now may be firing: count the ones before it
                now -= timedelta(seconds=3)
            last_due = now.replace(second=0, microsecond=0)
            codes = [daemon.stop() for daemon in daemons]
            counts = account(store, tally, first_up, last_due)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(30)
        if database is not None:
            database.remove()
    elapsed = time.monotonic() - began
    where = "" if database is None else f", {args.daemons} daemon(s) on PostgreSQL"
    print(
        f"soak: {elapsed:.0f} s{where}, {tally.kills} SIGKILLs at random moments, "
        f"daemon exit at the end {' '.join(map(str, codes))}"
    )
    print(
        f"  webhooks: {tally.webhooks_sent} deliveries, {tally.webhook_attempts} requests "
        f"(redeliveries after a kill: {tally.webhook_attempts - tally.webhooks_sent}), "
        f"unacknowledged at the end {len(tally.unanswered_webhooks)}"
    )
    print(f"  events: {tally.events_sent} sent, unanswered (cut off by a kill) {len(tally.unanswered_events)}")
    if args.stream_rate > 0:
        print(f"  stream: {len(tally.stream_added)} entries added, unread or unacknowledged at the end {unread}")
    print(f"  answers: {dict(sorted(tally.statuses.items()))} (0 = refused or cut off)")
    for name, value in counts.items():
        print(f"  {name}: {value}")
    bad = ("lost", "duplicated", "mismatched", "not final", "missing schedule slots")
    if still_open or unread or any(counts[name] for name in bad) or tally.unanswered_webhooks:
        sys.exit(1)


if __name__ == "__main__":
    main()
