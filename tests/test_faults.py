"""Fault injection (issue 8): a failing store, an HTTP agent that never answers, an API that resets connections.

The store fault is injected at the store boundary: a Store that delegates to the real store (SQLite
and PostgreSQL) and fails on demand, under the real dispatcher and HTTP server on a real port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import free_port, running_daemon, wait_for
from triggerd.clock import SystemClock
from triggerd.config.loader import load
from triggerd.config.models import StoreSettings
from triggerd.dispatch.dispatcher import Dispatcher
from triggerd.errors import StoreError
from triggerd.http.server import HttpServer
from triggerd.runs import RunStatus
from triggerd.store import open_store
from triggerd.store.abc import Store

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger: {id: hook, type: webhook, webhook: {}, agent: {id: echo}}
"""


class FailingStore:
    """The real store, but every call fails while `failing` is set (a full or read-only disk, a lock)."""

    def __init__(self, real: Store) -> None:
        self.real = real
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.failing:
                raise StoreError("store write failed: database or disk is full (injected)")
            return await method(*args, **kwargs)

        return call


def test_a_failing_store_answers_503_and_loses_nothing_accepted_once_it_clears(tmp_path: Path, store_url: str) -> None:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "all.yaml").write_text(DEFS)
    port = free_port()
    (tmp_path / "triggerd.yaml").write_text(f'server: {{listen: "127.0.0.1:{port}"}}\ndefinitions: [defs]\n')

    async def scenario() -> dict[str, Any]:
        configuration = load(tmp_path / "triggerd.yaml", env={}).configuration
        assert configuration is not None
        real = open_store(StoreSettings(store_url))
        await real.open()
        store = FailingStore(real)
        dispatcher = Dispatcher(store, configuration)  # type: ignore[arg-type]
        await dispatcher.start()

        async def readiness() -> list[str]:
            try:
                await store.ping()
            except StoreError as exc:
                return [f"store unreachable: {exc}"]
            return []

        server = HttpServer(configuration.settings, dispatcher, readiness, SystemClock(), accepting=lambda: True)
        await server.start()
        url = f"http://127.0.0.1:{port}"
        answers: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as session:

                async def post() -> tuple[int, Any, str | None]:
                    async with session.post(f"{url}/webhooks/hook", json={"n": 1}) as resp:
                        return resp.status, await resp.json(), resp.headers.get("Retry-After")

                answers["healthy"] = await post()
                store.failing = True
                answers["failing"] = await post()
                async with session.get(f"{url}/readyz") as resp:
                    answers["readyz_failing"] = (resp.status, await resp.json())
                store.failing = False
                answers["recovered"] = await post()
                async with session.get(f"{url}/readyz") as resp:
                    answers["readyz_recovered"] = resp.status
            for _ in range(100):
                runs = await real.list_runs(trigger_id="hook")
                if all(r.status.is_final for r in runs):
                    break
                await asyncio.sleep(0.05)
            answers["stored"] = sorted(r.id for r in runs)
            answers["statuses"] = {str(r.status) for r in runs}
        finally:
            await server.stop()
            await dispatcher.drain(1)
            await real.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers["healthy"][0] == 202
    assert answers["failing"] == (503, {"error": "temporarily unavailable"}, "5")  # the sender will retry
    status, body = answers["readyz_failing"]
    assert status == 503
    assert body["problems"] == ["store unreachable: store write failed: database or disk is full (injected)"]
    assert answers["recovered"][0] == 202
    assert answers["readyz_recovered"] == 200
    acknowledged = sorted([answers["healthy"][1]["run_id"], answers["recovered"][1]["run_id"]])
    assert answers["stored"] == acknowledged  # every 202 is stored, nothing else
    assert answers["statuses"] == {"completed"}


@pytest.mark.parametrize(
    ("restart", "attempts"),
    [
        (False, [None]),  # the fault clears while the daemon runs: the kept outcome is written, no restart
        (True, ["interrupted", None]),  # stopped while it still fails: the next start resumes the run
    ],
)
def test_an_outcome_the_store_refused_is_not_lost(
    tmp_path: Path, store_url: str, restart: bool, attempts: list[str | None]
) -> None:
    defs = (
        "agent: {id: slow, type: command, command: [sleep, '0.5']}\n---\n"
        "trigger: {id: job, type: event, event: {pattern: never}, agent: {id: slow}, "
        "retry: {max_attempts: 2, backoff: 1s, max_backoff: 1s}}\n"
    )
    (tmp_path / "all.yaml").write_text(defs)

    async def scenario() -> tuple[RunStatus | None, RunStatus | None, list[str | None]]:
        configuration = load(None, paths=[tmp_path / "all.yaml"], env={}).configuration
        assert configuration is not None
        real = open_store(StoreSettings(store_url))
        await real.open()
        store = FailingStore(real)
        dispatcher = Dispatcher(store, configuration)  # type: ignore[arg-type]
        await dispatcher.start()
        run_id = (await dispatcher.fire("job")).run_id
        await asyncio.sleep(0.2)
        store.failing = True  # the disk fills while the command runs: its outcome cannot be recorded
        await asyncio.sleep(0.8)
        during = await real.get_run(run_id)
        if restart:
            await dispatcher.drain(0)
            dispatcher = Dispatcher(real, configuration)
            await dispatcher.start()
        store.failing = False
        for _ in range(100):
            final = await real.get_run(run_id)
            if final is not None and final.status.is_final:
                break
            await asyncio.sleep(0.05)
        await dispatcher.drain(1)
        await real.close()
        assert during is not None and final is not None
        return during.status, final.status, [a.error for a in final.attempts]

    during, final, errors = asyncio.run(scenario())
    assert during is RunStatus.RUNNING  # nothing was recorded wrongly while the store failed
    assert final is RunStatus.COMPLETED
    assert errors == attempts


@contextmanager
def silent_server(reset: bool) -> Iterator[int]:
    """A TCP server on loopback that accepts and then never answers, or resets every connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()  # an RST, not a FIN
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def test_an_http_agent_that_never_answers_times_out_clearly(tmp_path: Path) -> None:
    with silent_server(reset=False) as port:
        defs = (
            f"agent: {{id: relay, type: http, url: 'http://127.0.0.1:{port}/run'}}\n---\n"
            "trigger: {id: t, type: event, event: {pattern: never}, agent: {id: relay}, timeout_seconds: 1}\n"
        )
        with running_daemon(tmp_path, defs) as daemon:
            run = daemon.wait_run(daemon.fire("t"), timeout=15)
    assert (run["status"], run["error"]) == ("timed_out", "attempt timed out after 1s")


def test_an_anthropic_endpoint_that_resets_connections_is_a_clear_retryable_failure(tmp_path: Path) -> None:
    with silent_server(reset=True) as port:
        defs = (
            f"agent: {{id: claude, type: anthropic, model: m, api_key: k, base_url: 'http://127.0.0.1:{port}'}}"
            "\n---\ntrigger: {id: t, type: event, event: {pattern: never}, agent: {id: claude}, "
            "retry: {max_attempts: 2, backoff: 1s, max_backoff: 1s}}\n"
        )
        with running_daemon(tmp_path, defs) as daemon:
            run = daemon.wait_run(daemon.fire("t"), timeout=20)
    assert run["status"] == "failed"
    assert len(run["attempts"]) == 2  # retried by our policy
    assert run["error"].startswith("Anthropic API unreachable: APIConnectionError"), json.dumps(run["error"])


def test_a_daemon_whose_postgresql_goes_away_answers_503_and_recovers(
    tmp_path: Path, postgres_server: Any, postgres_url: str
) -> None:
    with running_daemon(tmp_path, DEFS, store=postgres_url) as daemon:
        first = daemon.request("POST", "/webhooks/hook", {"n": 1})
        postgres_server.stop("fast")
        try:
            refused = daemon.request("POST", "/webhooks/hook", {"n": 2})
            ready = daemon.request("GET", "/readyz")
        finally:
            postgres_server.start()
        recovered = wait_for(lambda: daemon.request("GET", "/readyz")[0] == 200, timeout=10, what="ready again")
        second = daemon.request("POST", "/webhooks/hook", {"n": 3})
        for answer in (first, second):
            assert daemon.wait_run(answer[1]["run_id"])["status"] == "completed"
        listed = daemon.request("GET", "/v1/triggers/hook/executions")[1]
        log = daemon.log.read_text()
    assert (first[0], refused, second[0], recovered) == (202, (503, {"error": "temporarily unavailable"}), 202, True)
    assert ready[0] == 503 and ready[1]["problems"][0].startswith("store unreachable: ")
    assert sorted(run["id"] for run in listed["runs"]) == sorted([first[1]["run_id"], second[1]["run_id"]])
    assert "Traceback" not in log
