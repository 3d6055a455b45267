"""The real daemon as a subprocess on a free loopback port, and small HTTP helpers for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

FINAL = {"completed", "failed", "timed_out", "cancelled", "skipped"}
FIXTURES = Path(__file__).parent / "fixtures"
SQLITE_URL = "sqlite:///./state/triggerd.db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read(), exc.code
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Daemon:
    """A running `triggerd run`; every wait is bounded."""

    root: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    token: str | None = None
    preexec: Callable[[], None] | None = None  # run in the child before exec, e.g. to set rlimits
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "daemon.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True) -> Daemon:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "triggerd", "run", "--config", str(self.root / "triggerd.yaml")],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=self.preexec,
            )
        if ready:
            try:
                wait_for(self._ready, timeout=20, what="the daemon to be ready")
                broken = [line for line in self.log_lines() if line["level"] == "error" and "file" in line]
                assert not broken, f"definitions did not load: {broken}"
            except BaseException:  # nobody will stop a daemon that did not start as asked
                self.process.kill()
                self.process.wait(10)
                raise
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return http("GET", self.url + "/readyz")[0] == 200
        except OSError:
            return False

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        auth = {"Authorization": f"Bearer {self.token}"} if self.token and path.startswith("/v1") else {}
        return http(method, self.url + path, body, {**auth, **(headers or {})})

    def fire(self, trigger_id: str, input_: dict[str, Any] | None = None) -> str:
        status, answer = self.request("POST", f"/v1/triggers/{trigger_id}/fire", {"input": input_ or {}})
        assert status == 202, answer
        return str(answer["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        status, answer = self.request("GET", f"/v1/runs/{run_id}")
        assert status == 200, answer
        return dict(answer)

    def wait_run(self, run_id: str, statuses: set[str] = FINAL, timeout: float = 15.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in statuses else None

        return dict(wait_for(reached, timeout=timeout, what=f"run {run_id} to reach {sorted(statuses)}"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"daemon did not stop within {timeout}s") from None

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


def write_config(
    root: Path,
    definitions: str,
    settings: str = "",
    port: int | None = None,
    server: str = "",
    store: str = "",
    store_settings: str = "",
    level: str = "debug",
) -> int:
    """A settings file with a free port (and `server` lines under server:), and one definitions file.

    `store` is the store URL (the `store_url` fixture gives one per store); default a SQLite file in root/state.
    `store_settings` are more lines under store:, `level` the log level.
    """
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    (root / "defs").mkdir(exist_ok=True)
    (root / "triggerd.yaml").write_text(
        f'server:\n  listen: "127.0.0.1:{port}"\n{server}store:\n  url: "{store or SQLITE_URL}"\n{store_settings}'
        f"definitions: [defs]\nlogging:\n  format: json\n  level: {level}\n" + textwrap.dedent(settings)
    )
    (root / "defs" / "all.yaml").write_text(textwrap.dedent(definitions))
    return port


@contextmanager
def running_daemon(
    root: Path,
    definitions: str,
    settings: str = "",
    env: dict[str, str] | None = None,
    server: str = "",
    store: str = "",
) -> Iterator[Daemon]:
    port = write_config(root, definitions, settings, server=server, store=store)
    daemon = Daemon(root, port, {"PATH": os.environ["PATH"], **(env or {})}).start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


def write_instance_config(
    root: Path, name: str, definitions: str, store: str, lease: str = "", limits: str = "", level: str = "debug"
) -> int:
    """Settings for instance `name` of several daemons sharing `store` (SPEC 10), with no shutdown grace
    (a test stops them at once); `lease` (e.g. "2s") when not the default, `limits` more lines under limits:."""
    return write_config(
        root,
        definitions,
        "limits:\n  shutdown_grace_seconds: 0\n" + limits,
        store=store,
        store_settings=f'  instance: "{name}"\n' + (f'  lease: "{lease}"\n' if lease else ""),
        level=level,
    )


def start_instance(
    tmp_path: Path, name: str, definitions: str, store: str, lease: str = "", limits: str = ""
) -> Daemon:
    """`triggerd run` as instance `name` of `store`, in tmp_path/name (see write_instance_config)."""
    port = write_instance_config(tmp_path / name, name, definitions, store, lease, limits)
    return Daemon(tmp_path / name, port, {"PATH": os.environ["PATH"]}).start()


def stop_all(daemons: list[Daemon]) -> None:
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


@contextmanager
def instances(tmp_path: Path, definitions: str, store: str, names: str = "ab") -> Iterator[list[Daemon]]:
    """A daemon per letter of `names` (see start_instance), started in turn; all stopped on exit."""
    daemons: list[Daemon] = []
    try:
        for name in names:
            daemons.append(start_instance(tmp_path, name, definitions, store))
        yield daemons
    finally:
        stop_all(daemons)


def run_cli(
    cwd: Path | None, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`python -m triggerd *args` in `cwd`, its output as text; the environment is PATH and `env` (which may
    set another PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "triggerd", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


@dataclass
class FakeClock:
    """A clock to inject (triggerd's Clock): `current` is now, set by the test; monotonic time is real."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return time.monotonic()


def processes_with(variable: str, values: set[str]) -> list[int]:
    """The live processes (zombies aside) whose environment sets `variable` to one of `values`:
    commands found by the TRIGGERD_RUN_ID the daemon gives them, say."""
    wanted = {f"{variable}={value}".encode() for value in values}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ours = entry.name.isdigit() and wanted & set((entry / "environ").read_bytes().split(b"\0"))
            if ours and pid_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue  # ended meanwhile, or another user's
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
