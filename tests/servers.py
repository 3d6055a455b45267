"""Real servers for the tests, started once per session from the machine's own packages.

A server that cannot be had here (its package is not installed and cannot be, or the tests do
not run as a user that may start it) skips the tests that need it, with the reason printed.
`.ci/run` sets TRIGGERD_REQUIRE_SERVERS=1, which turns every such skip into a failure, so CI
always runs them.

PostgreSQL (Debian's `postgresql` package): `initdb` + `pg_ctl` in a temporary folder, on a free
loopback port, trust authentication for the role `triggerd`. As root the server runs as the
package's `postgres` user (PostgreSQL refuses to run as root). Each test that asks for
`postgres_url` gets a database of its own, created from the session's server.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import free_port

REQUIRE = os.environ.get("TRIGGERD_REQUIRE_SERVERS") == "1"
START_TIMEOUT = 60


def unavailable(reason: str) -> None:
    """Skip the test for a missing server, or fail it where CI requires every server."""
    if REQUIRE:
        pytest.fail(f"TRIGGERD_REQUIRE_SERVERS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl/postgres: on PATH, else the newest of Debian's versions."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresServer:
    """One running PostgreSQL cluster; `database()` makes a fresh database and returns its URL."""

    bin: Path
    root: Path
    port: int
    as_user: Callable[[], None] | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://triggerd@127.0.0.1:{self.port}/{database}"

    def run(self, *argv: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, preexec_fn=self.as_user, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=200 "
            # a test cluster: speed over surviving a power cut (daemon crashes are still real)
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        proc = self.run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", str(START_TIMEOUT), "start",
        )  # fmt: skip
        if proc.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def database(self) -> str:
        """A fresh, empty database (the server started again if a test stopped it); its URL."""
        if not self.running():  # a test that stopped the server must not break the next one
            self.start()
        name = "t_" + secrets.token_hex(6)
        proc = self.run(
            str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "triggerd", "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}",
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {proc.stderr}")
        return self.url(name)


def _start_postgres() -> PostgresServer:
    bin_dir = _postgres_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        raise AssertionError("unreachable")
    as_user: Callable[[], None] | None = None
    root = Path(tempfile.mkdtemp(prefix="triggerd-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
            raise AssertionError("unreachable") from None
        os.chown(root, owner.pw_uid, owner.pw_gid)

        def as_user() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

    server = PostgresServer(bin_dir, root, free_port(), as_user)
    proc = server.run(
        str(bin_dir / "initdb"), "-D", str(server.data), "-U", "triggerd", "--auth=trust", "-E", "UTF8",
        "--no-sync", "--locale=C",
    )  # fmt: skip
    if proc.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"initdb failed: {proc.stderr.strip()[-500:]}")
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = _start_postgres()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.database()
