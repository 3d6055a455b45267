"""Flow control where time matters (SPEC 12): a throttle's window and paused schedule slots, with
two real daemons (triggerd.daemon.Daemon, in this process so that they share the test's clock)
sharing one store, driven over HTTP on loopback. On both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness import FakeClock, http, write_instance_config
from tests.test_flow_control import QUICK, hook
from triggerd.daemon import Daemon, DaemonState

FINAL = {"completed", "failed", "skipped", "cancelled", "timed_out"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Running:
    daemon: Daemon
    url: str

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await asyncio.to_thread(http, method, self.url + path, body)


@asynccontextmanager
async def daemons(tmp_path: Path, definitions: str, store: str, clock: FakeClock) -> AsyncIterator[list[Running]]:
    """Two daemons, a and b, over one store, both on `clock`; stopped on exit."""
    running: list[Running] = []
    started: list[tuple[Daemon, asyncio.Task[int]]] = []
    try:
        for name in ("a", "b"):
            port = write_instance_config(tmp_path / name, name, definitions, store, level="warning")
            daemon = Daemon(tmp_path / name / "triggerd.yaml", clock)
            started.append((daemon, asyncio.create_task(daemon.serve())))
            await until(lambda d=daemon: d.state is DaemonState.RUNNING, what=f"daemon {name} to start")
            running.append(Running(daemon, f"http://127.0.0.1:{port}"))
        yield running
    finally:
        for daemon, _ in started:
            daemon.request_stop()
        await asyncio.wait_for(asyncio.gather(*(task for _, task in started), return_exceptions=True), 30)


async def until(predicate: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    """Poll `predicate` (a coroutine's answer is awaited) until it is truthy, for at most `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def runs_of(daemon: Running, trigger_id: str) -> list[dict[str, Any]]:
    status, answer = await daemon.request("GET", f"/v1/runs?trigger={trigger_id}&limit=100")
    assert status == 200, answer
    return sorted(answer["runs"], key=lambda r: r["id"])


def test_a_throttle_of_5_a_minute_starts_5_and_the_rest_as_the_window_moves(tmp_path: Path, store_url: str) -> None:
    definitions = QUICK + hook(
        "capped", "{id: quick, input_mapping: {n: $.body.n}}", "  max_concurrent: 20\n  throttle: {limit: 5, per: 1m}\n"
    )
    clock = FakeClock(utc("2026-03-02T10:00:00Z"))

    async def scenario() -> None:
        async with daemons(tmp_path, definitions, store_url, clock) as (a, b):
            for n in range(8):
                status, answer = await (a, b)[n % 2].request("POST", "/webhooks/capped", {"n": n})
                assert status == 202, answer

            async def counts() -> tuple[int, int]:
                runs = await runs_of(a, "capped")
                return (
                    sum(r["status"] == "completed" for r in runs),
                    sum((r["status"], r["reason"]) == ("pending", "throttled") for r in runs),
                )

            await until(lambda: _equals(counts(), (5, 3)), what="5 started and 3 throttled")
            await asyncio.sleep(1.5)  # two polls of each daemon: the window has not moved, nothing starts
            assert await counts() == (5, 3)
            clock.current = utc("2026-03-02T10:00:30Z")
            await asyncio.sleep(1.5)
            assert await counts() == (5, 3)
            clock.current = utc("2026-03-02T10:01:00.500Z")  # the first five starts leave the window
            await until(lambda: _equals(counts(), (8, 0)), what="the rest to start as the window moved")
            runs = await runs_of(b, "capped")
            late = [r for r in runs if utc(r["started_at"]) >= utc("2026-03-02T10:01:00Z")]
            assert len(late) == 3 and all(r["reason"] is None for r in runs)

    asyncio.run(scenario())


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


def test_a_paused_schedule_records_its_slot_skipped_and_resume_restores_it(tmp_path: Path, store_url: str) -> None:
    definitions = (
        QUICK + "trigger:\n  id: tick\n  type: schedule\n  schedule: {cron: '* * * * *', catchup_window: 0}\n"
        "  agent: {id: quick}\n"
    )
    clock = FakeClock(utc("2026-03-02T10:00:30Z"))

    async def at(moment: str, every: list[Running]) -> None:
        clock.current = utc(moment)
        for each in every:
            assert each.daemon.scheduler is not None
            each.daemon.scheduler.wake()

    async def scenario() -> None:
        async with daemons(tmp_path, definitions, store_url, clock) as (a, b):
            status, answer = await a.request("POST", "/v1/triggers/tick/pause")
            assert status == 200 and answer["paused"], answer
            await until(lambda: "tick" in b.daemon.dispatcher.flow.paused, what="b to learn of the pause")  # type: ignore[union-attr]
            await at("2026-03-02T10:01:00.200Z", [a, b])
            slot = await until(lambda: runs_of(a, "tick"), what="the paused slot's record")
            assert [(r["status"], r["reason"], r["nominal_time"]) for r in slot] == [
                ("skipped", "paused", "2026-03-02T10:01:00.000Z")
            ]
            status, answer = await b.request("POST", "/v1/triggers/tick/resume")
            assert status == 200 and not answer["paused"], answer
            await until(lambda: "tick" not in a.daemon.dispatcher.flow.paused, what="a to learn of the resume")  # type: ignore[union-attr]
            await at("2026-03-02T10:02:00.200Z", [a, b])

            async def second() -> list[dict[str, Any]] | None:
                runs = await runs_of(a, "tick")
                return runs if len(runs) == 2 and runs[1]["status"] in FINAL else None

            runs = await until(second, what="the slot after the resume to run")
            assert (runs[1]["status"], runs[1]["reason"], runs[1]["nominal_time"]) == (
                "completed",
                None,
                "2026-03-02T10:02:00.000Z",
            )

    asyncio.run(scenario())
