"""Hot reload with real files and a running daemon (SPEC 8), and the systemd notify protocol."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Daemon, http, running_daemon, wait_for, write_config
from tests.test_metrics import scrape

PY = json.dumps(sys.executable)
BASE = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: stable
  type: webhook
  webhook: {endpoint: /hooks/stable}
  agent: {id: echo, input_mapping: {v: $.body.v}}
---
trigger:
  id: nightly
  type: schedule
  schedule: {cron: "0 3 * * *"}
  agent: {id: echo}
---
trigger:
  id: config-watch
  type: event
  event: {pattern: "*.config.*", source: [system]}
  agent: {id: echo, input_mapping: {type: $.event.type, data: $.event.data}}
"""


def hook(path: str, mapping: str = "{x: $.body.x}") -> str:
    return textwrap.dedent(f"""\
        trigger:
          id: {path}
          type: webhook
          webhook: {{endpoint: /hooks/{path}}}
          agent: {{id: echo, input_mapping: {mapping}}}
        """)


def post(daemon: Daemon, path: str, body: object) -> tuple[int, object]:
    return http("POST", daemon.url + path, body)


def config_events(daemon: Daemon) -> list[dict[str, object]]:
    runs = daemon.request("GET", "/v1/runs?trigger=config-watch")[1]["runs"]
    return [daemon.wait_run(r["id"])["input"] for r in reversed(runs)]


def test_files_added_edited_broken_and_deleted(tmp_path: Path) -> None:
    with running_daemon(tmp_path, BASE) as daemon:
        defs = tmp_path / "defs"
        written = time.monotonic()
        (defs / "new.yaml").write_text(hook("new"))
        wait_for(lambda: post(daemon, "/hooks/new", {"x": 1})[0] == 202, timeout=5, interval=0.02)
        assert time.monotonic() - written < 1.0  # live within a second of being written

        (defs / "new.yaml").write_text(hook("new", "{y: $.body.x}"))  # an edit changes the mapping

        def mapped() -> bool:
            status, answer = post(daemon, "/hooks/new", {"x": 2})
            return status == 202 and daemon.wait_run(answer["run_id"])["input"] == {"y": 2}  # type: ignore[index]

        wait_for(mapped, timeout=5)

        (defs / "new.yaml").write_text("trigger:\n  id: new\n  type: [webhook\n")  # a YAML error
        wait_for(lambda: any(e["type"] == "error.config.invalid" for e in config_events(daemon)), timeout=5)
        invalid = next(e for e in config_events(daemon) if e["type"] == "error.config.invalid")
        assert invalid["data"]["problems"][0].startswith("defs/new.yaml:3:9: error: YAML syntax error")  # type: ignore[index]
        assert post(daemon, "/hooks/new", {"x": 3})[0] == 202  # the old configuration still serves
        status, answer = daemon.request("POST", "/v1/reload")
        assert status == 422
        assert answer["status"] == "rejected"
        assert answer["problems"][0].startswith("defs/new.yaml:3:9: error: YAML syntax error")

        (defs / "new.yaml").unlink()
        wait_for(lambda: post(daemon, "/hooks/new", {"x": 4})[0] == 404, timeout=5)
        assert post(daemon, "/hooks/stable", {"v": 1})[0] == 202
        reloaded = [e for e in config_events(daemon) if e["type"] == "system.config.reloaded"]
        assert reloaded[-1]["data"]["changes"] == "triggers +0 -1 ~0, agents +0 -0 ~0, sources +0 -0 ~0"  # type: ignore[index]


def test_an_editor_saving_through_a_temporary_file_and_rename(tmp_path: Path) -> None:
    with running_daemon(tmp_path, BASE) as daemon:
        defs = tmp_path / "defs"
        temporary = defs / ".new.yaml.swp"
        temporary.write_text(hook("renamed"))
        time.sleep(0.4)
        assert post(daemon, "/hooks/renamed", {})[0] == 404  # a swap file is not a definition
        os.rename(temporary, defs / "renamed.yaml")
        wait_for(lambda: post(daemon, "/hooks/renamed", {"x": 1})[0] == 202, timeout=3)


def test_sighup_and_the_api_reload_and_unchanged_schedules_keep_their_slot(tmp_path: Path) -> None:
    with running_daemon(tmp_path, BASE) as daemon:
        before = daemon.request("GET", "/v1/triggers/nightly")[1]["schedule"]
        assert daemon.request("POST", "/v1/reload") == (200, {"status": "reloaded"})
        (tmp_path / "defs" / "extra.yaml").write_text(hook("extra"))
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: post(daemon, "/hooks/extra", {})[0] == 202, timeout=5)
        after = daemon.request("GET", "/v1/triggers/nightly")[1]["schedule"]
    assert after["next_nominal"] == before["next_nominal"]


def test_a_removed_triggers_queued_runs_are_cancelled_and_its_running_run_finishes(tmp_path: Path) -> None:
    slow = (
        f"agent: {{id: slow, type: command, command: [{PY}, -c, 'import time; time.sleep(1.5)']}}\n---\n"
        "trigger: {id: busy, type: event, event: {pattern: never}, agent: {id: slow}}\n"
    )
    with running_daemon(tmp_path, BASE) as daemon:
        (tmp_path / "defs" / "busy.yaml").write_text(slow)
        wait_for(lambda: daemon.request("GET", "/v1/triggers/busy")[0] == 200, timeout=5)
        ids = [daemon.fire("busy") for _ in range(3)]
        daemon.wait_run(ids[0], {"running"})
        (tmp_path / "defs" / "busy.yaml").unlink()
        runs = [daemon.wait_run(i) for i in ids]
        reloads = [line["message"] for line in daemon.log_lines() if line["message"].startswith("reloaded")]
    assert reloads[-1].endswith("; 2 queued runs of removed triggers cancelled")
    assert [(r["status"], r["reason"]) for r in runs] == [
        ("completed", None),
        ("cancelled", "trigger_removed"),
        ("cancelled", "trigger_removed"),
    ]


def test_a_webhook_load_through_reloads_sees_no_error_but_for_the_removed_route(tmp_path: Path) -> None:
    with running_daemon(tmp_path, BASE) as daemon:
        defs = tmp_path / "defs"
        (defs / "doomed.yaml").write_text(hook("doomed"))
        wait_for(lambda: post(daemon, "/hooks/doomed", {})[0] == 202, timeout=5)
        answers: Counter[tuple[str, int]] = Counter()
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                for path in ("/hooks/stable", "/hooks/doomed"):
                    try:
                        answers[(path, post(daemon, path, {"v": 1})[0])] += 1
                    except OSError:
                        answers[(path, 0)] += 1

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            for i in range(5):
                (defs / f"churn{i}.yaml").write_text(hook(f"churn{i}"))
                time.sleep(0.3)
            (defs / "doomed.yaml").unlink()
            time.sleep(0.6)
            daemon.request("POST", "/v1/reload")
            time.sleep(0.3)
        finally:
            stop.set()
            for worker in workers:
                worker.join(10)
    assert {key for key in answers if key[0] == "/hooks/stable"} == {("/hooks/stable", 202)}
    assert set(answers) - {("/hooks/stable", 202)} == {("/hooks/doomed", 202), ("/hooks/doomed", 404)}
    assert answers[("/hooks/stable", 202)] > 100


def test_systemd_notifications_ready_reloading_stopping_and_watchdog(tmp_path: Path) -> None:
    for address in (str(tmp_path / "notify.sock"), f"@triggerd-test-{os.getpid()}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address if not address.startswith("@") else "\0" + address[1:])
            sock.settimeout(10)
            env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
            received: list[str] = []

            def until(field: str, sock: socket.socket = sock, received: list[str] = received) -> list[str]:
                while not any(line == field for message in received for line in message.split("\n")):
                    received.append(sock.recv(4096).decode())
                return received

            with running_daemon(tmp_path / address[-6:].strip("@/"), BASE, env=env) as daemon:
                until("READY=1")
                watchdogs = sum(m == "WATCHDOG=1" for m in until("WATCHDOG=1"))
                time.sleep(0.5)
                assert daemon.process is not None
                daemon.process.send_signal(signal.SIGHUP)
                until("RELOADING=1")
                count = len(received)
                while not any("READY=1" in m for m in received[count:]):  # READY=1 again after the reload
                    received.append(sock.recv(4096).decode())
                daemon.stop()
                until("STOPPING=1")
            sock.setblocking(False)
            try:
                while True:
                    received.append(sock.recv(4096).decode())
            except BlockingIOError:
                pass
            assert watchdogs >= 1
            assert sum(m == "WATCHDOG=1" for m in received) >= 3  # every 0.1 s while it ran
            ready = next(m for m in received if m.startswith("READY=1"))
            assert ready.split("\n")[1].startswith("STATUS=serving 3 triggers")
            reloading = next(m for m in received if m.startswith("RELOADING=1"))
            assert reloading.split("\n")[1].startswith("MONOTONIC_USEC=")


AGENTS = "agent: {id: echo, type: command, command: [cat]}\n"
TRIGGERS = """\
trigger: {id: stable, type: webhook, webhook: {endpoint: /hooks/stable}, agent: {id: echo}}
---
trigger: {id: nightly, type: schedule, schedule: {cron: "0 3 * * *"}, agent: {id: echo}}
"""
# Left out at start: a time zone that does not exist (and it names the agent, which does).
FAILING = """\
trigger:
  id: failing
  type: schedule
  schedule: {cron: "0 9 * * *", timezone: Mars/Olympus_Mons}
  agent: {id: echo}
"""
FAILING_PROBLEM = {
    "file": "defs/failing.yaml",
    "line": 4,
    "column": 43,
    "severity": "error",
    "message": "unknown time zone 'Mars/Olympus_Mons' (use an IANA name such as 'America/New_York' or 'UTC')",
    "pointer": "/trigger/schedule/timezone",
}


def start_with_a_failing_file(root: Path) -> Daemon:
    """agents.yaml and triggers.yaml that load, and failing.yaml that does not: the daemon starts anyway."""
    port = write_config(root, "")
    defs = root / "defs"
    (defs / "all.yaml").unlink()
    (defs / "agents.yaml").write_text(AGENTS)
    (defs / "triggers.yaml").write_text(TRIGGERS)
    (defs / "failing.yaml").write_text(FAILING)
    daemon = Daemon(root, port, {"PATH": os.environ["PATH"]}).start(ready=False)

    def ready() -> bool:
        try:
            return http("GET", daemon.url + "/readyz")[0] == 200
        except OSError:
            return False  # not listening yet

    wait_for(ready, timeout=20, what="the daemon to be ready")
    return daemon


def config(daemon: Daemon) -> dict[str, Any]:
    status, answer = daemon.request("GET", "/v1/config")
    assert status == 200, answer
    return dict(answer)


def save(path: Path, text: str) -> None:
    """Save as editors do, through a hidden temporary file and a rename: the watcher sees one
    change with the whole new content, never a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def next_reload(daemon: Daemon, edit: Callable[[], object]) -> dict[str, Any]:
    """Make the edit, then wait for the reload the watcher makes of it; return how it went."""
    before = config(daemon)["reloads"]
    edit()
    settled = wait_for(
        lambda: (now := config(daemon))["reloads"] != before and now, timeout=10, what="a reload after the edit"
    )
    return dict(settled["last_reload"])


def test_a_file_failing_at_start_blocks_no_reload_of_the_others(tmp_path: Path) -> None:
    daemon = start_with_a_failing_file(tmp_path)
    try:
        defs = tmp_path / "defs"
        assert post(daemon, "/hooks/stable", {})[0] == 202
        shown = config(daemon)
        assert shown["problems"] == [FAILING_PROBLEM]
        assert shown["applied_at"].endswith("Z") and shown["last_reload"] is None
        assert shown["settings_file"] == "triggerd.yaml"
        files = {f["file"]: f for f in shown["files"]}
        assert sorted(files) == ["defs/agents.yaml", "defs/failing.yaml", "defs/triggers.yaml"]
        assert files["defs/failing.yaml"]["errors"] == 1 and files["defs/failing.yaml"]["triggers"] == []
        assert files["defs/triggers.yaml"]["triggers"] == ["nightly", "stable"]
        assert files["defs/agents.yaml"]["agents"] == ["echo"]
        assert len(files["defs/agents.yaml"]["sha256"]) == 64
        assert scrape(daemon)['triggerd_config_problems{severity="error"}'] == 1

        added = TRIGGERS + "---\ntrigger: {id: added, type: webhook, webhook: {}, agent: {id: echo}}\n"
        outcome = next_reload(daemon, lambda: save(defs / "triggers.yaml", added))
        assert (outcome["status"], outcome["problems"]) == ("reloaded", [])
        assert post(daemon, "/webhooks/added", {})[0] == 202
        after = config(daemon)
        assert after["problems"] == [FAILING_PROBLEM]  # still left out, still listed
        assert after["applied_at"] > shown["applied_at"]
        assert daemon.request("POST", "/v1/reload") == (200, {"status": "reloaded"})
        assert scrape(daemon)['triggerd_config_problems{severity="error"}'] == 1

        fixed = FAILING.replace("Mars/Olympus_Mons", "Europe/Paris")
        outcome = next_reload(daemon, lambda: save(defs / "failing.yaml", fixed))
        assert outcome["status"] == "reloaded"
        assert daemon.request("GET", "/v1/triggers/failing")[0] == 200
        assert config(daemon)["problems"] == []
        assert scrape(daemon)['triggerd_config_problems{severity="error"}'] == 0
    finally:
        daemon.stop()


def test_a_change_that_breaks_a_file_is_rejected_even_beside_an_old_failure(tmp_path: Path) -> None:
    daemon = start_with_a_failing_file(tmp_path)
    try:
        defs = tmp_path / "defs"
        broken = TRIGGERS.replace("/hooks/stable", "/v1/stable")
        outcome = next_reload(daemon, lambda: save(defs / "triggers.yaml", broken))
        assert outcome["status"] == "rejected"
        assert [(p["file"], p["line"], p["column"]) for p in outcome["problems"]] == [("defs/triggers.yaml", 1, 58)]
        assert post(daemon, "/hooks/stable", {})[0] == 202  # the running configuration stays
        status, answer = daemon.request("POST", "/v1/reload")
        assert status == 422
        assert answer["problems"] == [
            "defs/triggers.yaml:1:58: error: endpoint /v1/stable is reserved for triggerd's own API "
            "(at /trigger/webhook/endpoint)"
        ]
        assert config(daemon)["problems"] == [FAILING_PROBLEM]  # the running configuration's, not the rejected one's

        # Editing the file that was failing is a change too: still failing, it rejects.
        still = FAILING.replace("Mars/Olympus_Mons", "Moon/Tycho")
        assert next_reload(daemon, lambda: save(defs / "triggers.yaml", TRIGGERS))["status"] == "reloaded"
        outcome = next_reload(daemon, lambda: save(defs / "failing.yaml", still))
        assert outcome["status"] == "rejected"
        assert [p["file"] for p in outcome["problems"]] == ["defs/failing.yaml"]
    finally:
        daemon.stop()


def test_an_agent_change_that_breaks_unchanged_triggers_is_rejected(tmp_path: Path) -> None:
    daemon = start_with_a_failing_file(tmp_path)
    try:
        defs = tmp_path / "defs"
        broken = 'agent: {id: echo, type: command, command: ["cat", "{{ not a path }}"]}\n'
        outcome = next_reload(daemon, lambda: save(defs / "agents.yaml", broken))
        assert outcome["status"] == "rejected"
        assert [(p["file"], p["line"], p["message"]) for p in outcome["problems"]] == [
            ("defs/agents.yaml", 1, "placeholder '{{ not a path }}' is not a dotted path like {{ a.b }}"),
            ("defs/triggers.yaml", 1, "agent 'echo' failed to load (defs/agents.yaml:1)"),
            ("defs/triggers.yaml", 3, "agent 'echo' failed to load (defs/agents.yaml:1)"),
        ]

        # Deleting it: nothing in the changed (gone) file fails, but the triggers that rely on it would.
        # (failing.yaml's trigger names it too, but was left out anyway: that blocks nothing.)
        outcome = next_reload(daemon, lambda: (defs / "agents.yaml").unlink())
        assert outcome["status"] == "rejected"
        assert [(p["file"], p["line"], p["message"]) for p in outcome["problems"]] == [
            ("defs/triggers.yaml", 1, "unknown agent 'echo'"),
            ("defs/triggers.yaml", 3, "unknown agent 'echo'"),
        ]
        assert post(daemon, "/hooks/stable", {})[0] == 202
        assert daemon.request("GET", "/v1/triggers/nightly")[0] == 200
    finally:
        daemon.stop()


def test_only_the_settings_file_is_watched_in_its_folder(tmp_path: Path) -> None:
    """The settings file's folder is watched by itself, not with what is below it: the store's
    files often live there (the default configuration keeps them in .triggerd/), and each commit
    woke the watcher (issue 17). A YAML file below it is not a definition and reloads nothing; the
    settings file changing still does."""
    with running_daemon(tmp_path, BASE) as daemon:
        before = config(daemon)["reloads"]
        (tmp_path / "state").mkdir(exist_ok=True)
        for n in range(3):
            (tmp_path / "state" / f"not-a-definition-{n}.yaml").write_text("trigger: {id: x}\n")
            time.sleep(0.1)
        settled = next_reload(daemon, lambda: (tmp_path / "defs" / "more.yaml").write_text(hook("more")))
        assert config(daemon)["reloads"] == {**before, "applied": before["applied"] + 1}, "a file below reloaded"
        assert settled["status"] == "reloaded", settled
        settings = tmp_path / "triggerd.yaml"
        assert next_reload(daemon, lambda: save(settings, settings.read_text() + "\n"))["status"] == "reloaded"


def test_a_settings_file_swapped_as_a_kubernetes_configmap_does_is_seen(tmp_path: Path) -> None:
    """A ConfigMap volume holds triggerd.yaml -> ..data/triggerd.yaml and swaps the `..data` link
    to a new folder: no file named *.yaml changes in the settings file's folder, yet the file does."""
    with running_daemon(tmp_path, BASE) as daemon:
        settings = tmp_path / "triggerd.yaml"
        text = settings.read_text()

        def version(name: str, content: str) -> None:
            (tmp_path / name).mkdir()
            (tmp_path / name / "triggerd.yaml").write_text(content)
            (tmp_path / "..data_tmp").symlink_to(name)
            os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

        def mount() -> None:
            version("..v1", text)
            (tmp_path / ".link").symlink_to("..data/triggerd.yaml")
            os.replace(tmp_path / ".link", settings)

        assert next_reload(daemon, mount)["status"] == "reloaded"
        assert next_reload(daemon, lambda: version("..v2", text + "\n# v2\n"))["status"] == "reloaded"
