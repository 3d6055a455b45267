"""Webhook ingest's cheap paths keep their guarantees: log lines per turn of the loop, orjson where it
reads the same as json, and a run acknowledged 202 is a run after kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness import Daemon, http, processes_with, running_daemon
from triggerd.logs import JsonFormatter, TurnHandler

SECRET = "ingest-secret-value"
DEFINITIONS = """\
agent: {id: parked, type: command, command: [sleep, "600"]}
---
trigger:
  id: github
  type: webhook
  webhook:
    authentication: {type: github, secret: "${INGEST_SECRET}"}
  agent:
    id: parked
    input_mapping:
      number: {path: $.body.number, required: true}
      big: $.body.big
      token: $.body.token
  max_concurrent: 1
"""
SETTINGS = "limits: {shutdown_grace_seconds: 0}\n"  # the parked command is cancelled at once on SIGTERM


def signed(daemon: Daemon, body: dict[str, object], delivery: str) -> tuple[int, dict[str, object]]:
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature}
    status, answer = http("POST", daemon.url + "/webhooks/github", raw=raw, headers=headers)
    return status, answer


class Writes(io.StringIO):
    """A stream that keeps each write apart, to see how lines were grouped."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def test_info_lines_of_one_loop_turn_go_out_in_one_write_and_a_warning_at_once_after_them() -> None:
    stream = Writes()
    handler = TurnHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.ingest.turn")
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    seen: dict[str, list[str]] = {}

    async def turn() -> None:
        for n in range(3):
            log.info("run created (pending)", extra={"run_id": f"r{n}", "trigger_id": "t"})
        seen["within the turn"] = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends: its lines are written
        await asyncio.sleep(0)
        seen["after the turn"] = list(stream.writes)
        log.info("queued", extra={"run_id": "r3"})
        log.warning("refused")
        seen["after a warning"] = list(stream.writes)

    asyncio.run(turn())
    log.info("off the loop", extra={"run_id": "r4"})
    assert seen["within the turn"] == []
    assert len(seen["after the turn"]) == 1
    lines = [json.loads(line) for line in seen["after the turn"][0].splitlines()]
    assert [(line["level"], line["run_id"]) for line in lines] == [("info", "r0"), ("info", "r1"), ("info", "r2")]
    assert [json.loads(line)["message"] for line in seen["after a warning"][1].splitlines()] == ["queued", "refused"]
    assert json.loads(stream.writes[-1])["run_id"] == "r4"  # no loop: written at once


def test_each_acknowledged_webhook_has_an_info_line_with_its_run_id_and_no_secret(tmp_path: Path) -> None:
    env = {"INGEST_SECRET": SECRET}
    with running_daemon(tmp_path, DEFINITIONS, SETTINGS, env=env) as daemon:
        body = {"number": 7, "token": SECRET}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda n: signed(daemon, body, f"d-{n}"), range(40)))
        assert {status for status, _ in answers} == {202}
        ids = {str(answer["run_id"]) for _, answer in answers}
        daemon.stop()
        created = [
            line for line in daemon.log_lines() if line["message"].startswith("run created") and line["level"] == "info"
        ]
        assert {line["run_id"] for line in created} >= ids
        assert all(line["trigger_id"] == "github" and line["agent_id"] == "parked" for line in created)
        assert SECRET not in daemon.log.read_text()


def test_a_body_integer_past_64_bits_is_mapped_exactly(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    with running_daemon(tmp_path, DEFINITIONS, SETTINGS, env={"INGEST_SECRET": SECRET}) as daemon:
        status, answer = signed(daemon, {"number": 1, "big": big}, "d-big")
        assert status == 202, answer
        assert daemon.run(str(answer["run_id"]))["input"]["big"] == big


def test_every_run_acknowledged_202_is_there_after_kill_9_right_after(tmp_path: Path, store_url: str) -> None:
    env = {"INGEST_SECRET": SECRET}
    with running_daemon(tmp_path, DEFINITIONS, SETTINGS, env=env, store=store_url) as daemon:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda n: signed(daemon, {"number": n}, f"k-{n}"), range(64)))
        daemon.stop(signal.SIGKILL)  # as soon as the last 202 is read
        assert {status for status, _ in answers} == {202}
        daemon.start()
        try:
            for _, answer in answers:
                run = daemon.run(str(answer["run_id"]))
                assert run["trigger_id"] == "github"
        finally:  # a command started in the moment before its process group was recorded outlives the kill
            end_commands_of({str(answer["run_id"]) for _, answer in answers})


def end_commands_of(run_ids: set[str]) -> None:
    """SIGKILL the process groups of commands whose TRIGGERD_RUN_ID is one of these runs."""
    for pid in processes_with("TRIGGERD_RUN_ID", run_ids):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
