"""Event matching with 1,000 event triggers: in-process, and through POST /v1/events in batches.

In-process, each event is matched the way the bus does it (pattern, source globs,
condition) through the pattern index; the baseline in the same run tries every
trigger's pattern for every event (a scan). Through the API, batches of events go to
a real daemon and are answered after their window changes are committed; the events
match counting triggers whose threshold is never reached, so the figure is matching and
committing, not running agents. The batched phase is repeated (`--repeat`, a fresh daemon
each time, so that every repeat starts from empty windows) and printed with the daemon's CPU
time per event. Loopback only, bounded.

    .venv/bin/python bench/events.py [--triggers 1000] [--events 20000] [--batch 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from loopback import free_port, wait_port

from triggerd.conditions import Scope, evaluate
from triggerd.config.loader import load
from triggerd.sources.bus import event_context
from triggerd.sources.events import EventIndex, parse_events, source_matches, type_matcher


def definitions(count: int) -> str:
    docs = ["agent: {id: parked, type: command, command: [sleep, '600'], max_concurrent: 1}"]
    for i in range(count):
        kind = i % 4
        pattern = [f"svc{i}.deploy.finished", f"app{i % 50}.*.error", f"*.timeout.{i}", f"/^job{i}\\\\.(ok|fail)$/"][
            kind
        ]
        docs.append(
            f'trigger:\n  id: t{i:04d}\n  type: event\n  event:\n    pattern: "{pattern}"\n'
            f'    source: ["svc-*", system]\n    condition: {{severity: ">= warning"}}\n'
            f"    count_threshold: 1000000\n    window: 1h\n  agent: {{id: parked}}\n"
        )
    return "\n---\n".join(docs) + "\n"


def sample_events(count: int, rng: random.Random) -> list[dict[str, object]]:
    kinds = [
        lambda n: f"svc{n}.deploy.finished",
        lambda n: f"app{n % 50}.checkout.error",
        lambda n: f"db.timeout.{n}",
        lambda n: f"job{n}.ok",
        lambda n: f"unrelated.{n}.event",
    ]
    return [
        {
            "type": rng.choice(kinds)(rng.randrange(1000)),
            "source": rng.choice(["svc-a", "system", "web"]),
            "severity": rng.choice(["info", "warning", "high"]),
            "data": {"n": i},
        }
        for i in range(count)
    ]


def in_process(triggers_text: str, events: list[dict[str, object]]) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "defs.yaml").write_text(triggers_text)
        configuration = load(None, paths=[Path(folder) / "defs.yaml"], env={}).configuration
    assert configuration is not None
    triggers = [t for t in configuration.triggers.values() if t.event is not None]
    index = EventIndex.build(triggers)
    parsed = [e for i in range(0, len(events), 1000) for e in parse_events(events[i : i + 1000], datetime.now(UTC))]

    def deliver(candidates_of: object) -> int:
        matched = 0
        for event in parsed:
            body = event.to_json()
            for trigger in candidates_of(event.type):  # type: ignore[operator]
                if not source_matches(trigger, event.source):
                    continue
                condition = trigger.event.condition  # type: ignore[union-attr]
                if condition is None or evaluate(condition, event_context(trigger, body, [body]), Scope.EVENT):
                    matched += 1
        return matched

    matchers = [(type_matcher(t.event.pattern), t) for t in triggers]  # type: ignore[union-attr]

    def scan(kind: str) -> list[object]:
        return [t for matches, t in matchers if matches(kind)]

    start = time.perf_counter()
    indexed = deliver(index.candidates)
    indexed_rate = len(parsed) / (time.perf_counter() - start)
    start = time.perf_counter()
    scanned = deliver(scan)
    scan_rate = len(parsed) / (time.perf_counter() - start)
    assert indexed == scanned, (indexed, scanned)
    return indexed_rate, scan_rate, indexed


async def through_api(url: str, events: list[dict[str, object]], batch: int, concurrency: int) -> float:
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def send(chunk: list[dict[str, object]]) -> None:
            async with gate, session.post(f"{url}/v1/events", json=chunk) as response:
                assert response.status == 202, await response.text()
                await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(send(chunk) for chunk in batches))
        return len(events) / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_daemon(text: str, events: list[dict[str, object]], batch: int, single: bool) -> tuple[float, float, float]:
    """A fresh daemon: (events/s one a request if `single`, else 0; events/s batched; daemon CPU us an event)."""
    with tempfile.TemporaryDirectory() as folder:
        root, port = Path(folder), free_port()
        (root / "defs").mkdir()
        (root / "defs" / "events.yaml").write_text(text)
        (root / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "sqlite:///./state.db"}}\ndefinitions: [defs]\n'
            "logging: {level: warning, format: json}\nlimits: {shutdown_grace_seconds: 0}\n"
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "triggerd", "run", "--config", str(root / "triggerd.yaml")],
            cwd=root,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        try:
            wait_port(port)
            url = f"http://127.0.0.1:{port}"
            api_single = asyncio.run(through_api(url, events[:2000], 1, 8)) if single else 0.0
            before = cpu_seconds(daemon.pid)
            api_batched = asyncio.run(through_api(url, events, batch, 4))
            cpu = (cpu_seconds(daemon.pid) - before) / len(events)
        finally:
            daemon.terminate()
            daemon.wait(30)
    return api_single, api_batched, cpu * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = definitions(args.triggers)
    events = sample_events(args.events, random.Random(42))
    indexed_rate, scan_rate, matches = in_process(text, events)
    api_single, first, cpu = through_daemon(text, events, args.batch, True)
    batched = [(first, cpu)] + [through_daemon(text, events, args.batch, False)[1:] for _ in range(args.repeat - 1)]
    print(f"triggers                   {args.triggers} event triggers (exact, glob, leading-wildcard, regex)")
    print(f"events                     {args.events} ({matches} trigger matches)")
    print(f"in-process, indexed        {indexed_rate:9.0f} events/s")
    print(f"in-process, scan (baseline){scan_rate:9.0f} events/s")
    print(f"ratio indexed / scan       {indexed_rate / scan_rate:9.1f}x")
    print(f"HTTP, one event a request  {api_single:9.0f} events/s (8 clients)")
    rates = ", ".join(f"{rate:.0f}" for rate, _ in batched)
    cpus = ", ".join(f"{us:.0f}" for _, us in batched)
    print(f"HTTP, {args.batch} a request      {rates} events/s (4 clients, committed before 202; a fresh daemon each)")
    print(f"daemon CPU per event       {cpus} us (the same repeats)")


if __name__ == "__main__":
    main()
