"""Real servers for the tests, started once per session from the machine's own packages.

A server that cannot be had here (its package is not installed and cannot be, or the tests do
not run as a user that may start it) skips the tests that need it, with the reason printed.
`.ci/run` sets TRIGGERD_REQUIRE_SERVERS=1, which turns every such skip into a failure, so CI
always runs them.

Brokers (Debian's `redis-server`, `rabbitmq-server`, `nats-server`): one process each on a free
loopback port with its data in a temporary folder (`redis_server`, `rabbitmq_server`,
`nats_server`); a test may stop() and start() one to take it away mid-stream.

PostgreSQL (Debian's `postgresql` package): the starter the benches use too (`bench/postgres.py`:
`initdb` + `pg_ctl` in a temporary folder, on a free loopback port, as the `postgres` user when
root). Each test that asks for `postgres_url` gets a database of its own, created from the
session's server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.postgres import PostgresServer, PostgresUnavailable, start_postgres
from bench.rabbitmq_node import node_env, server_binary
from tests.harness import free_port

REQUIRE = os.environ.get("TRIGGERD_REQUIRE_SERVERS") == "1"
START_TIMEOUT = 60


def unavailable(reason: str) -> None:
    """Skip the test for a missing server, or fail it where CI requires every server."""
    if REQUIRE:
        pytest.fail(f"TRIGGERD_REQUIRE_SERVERS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _start_postgres() -> PostgresServer:
    try:
        return start_postgres(free_port())
    except PostgresUnavailable as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = _start_postgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.database()


# --- brokers: Redis, RabbitMQ, NATS (Debian's redis-server, rabbitmq-server, nats-server) -----------


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class BrokerServer:
    """One broker process on a free loopback port; stop() and start() again keep its data folder,
    so a test can take the broker away mid-stream and bring it back."""

    name: str
    root: Path
    port: int
    argv: list[str]
    env: dict[str, str]
    url: str
    stop_argv: list[str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            self.argv, cwd=self.root, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{text}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.stop_argv is not None:
            subprocess.run(self.stop_argv, env={**os.environ, **self.env}, capture_output=True, timeout=60, check=False)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self.process = None
        deadline = time.monotonic() + 20
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _broker(name: str, package: str, binary: str, make: Callable[[Path, str], BrokerServer]) -> Iterator[BrokerServer]:
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None
    )
    if found is None:
        unavailable(f"{name} is not installed (Debian: apt-get install {package})")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix=f"triggerd-{name.lower()}-"))
    server = make(root, found)
    try:
        server.start()
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _redis(root: Path, binary: str) -> BrokerServer:
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), "--save", "", "--appendonly", "yes"]
    return BrokerServer("Redis", root, port, argv, {}, f"redis://127.0.0.1:{port}/0")


def _nats(root: Path, binary: str) -> BrokerServer:
    port = free_port()
    argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "jetstream")]
    return BrokerServer("NATS", root, port, argv, {}, f"nats://127.0.0.1:{port}")


def _rabbitmq(root: Path, binary: str) -> BrokerServer:
    # A node of its own: its name, ports, epmd, data and cookie (HOME) all below `root`.
    port, dist, epmd = free_port(), free_port(), free_port()
    env = node_env(root, port, dist, epmd, "triggerd-test")
    ctl = Path(server_binary(binary)).with_name("rabbitmqctl")
    stop = [str(ctl), "-n", env["RABBITMQ_NODENAME"], "stop"] if ctl.exists() else None
    return BrokerServer(
        "RabbitMQ", root, port, [server_binary(binary)], env, f"amqp://guest:guest@127.0.0.1:{port}/", stop
    )


def _end_epmd(server: BrokerServer) -> None:
    """RabbitMQ starts an epmd daemon of its own (ERL_EPMD_PORT), outside its process group."""
    epmd = shutil.which("epmd") or next(iter(glob.glob("/usr/lib/erlang/erts-*/bin/epmd")), None)
    if epmd:
        subprocess.run(
            [epmd, "-port", server.env["ERL_EPMD_PORT"], "-kill"], capture_output=True, timeout=30, check=False
        )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[BrokerServer]:
    yield from _broker("Redis", "redis-server", "redis-server", _redis)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[BrokerServer]:
    yield from _broker("NATS", "nats-server", "nats-server", _nats)


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[BrokerServer]:
    servers: list[BrokerServer] = []

    def make(root: Path, binary: str) -> BrokerServer:
        servers.append(_rabbitmq(root, binary))
        return servers[-1]

    try:
        yield from _broker("RabbitMQ", "rabbitmq-server", "rabbitmq-server", make)
    finally:
        for server in servers:
            _end_epmd(server)
