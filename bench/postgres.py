"""A throwaway PostgreSQL server for the benches and the tests, from the machine's own packages.

`initdb` + `pg_ctl` in a temporary folder, on a loopback port the caller chose, trust
authentication for the role `triggerd`. As root the server runs as the package's `postgres`
user (PostgreSQL refuses to run as root). `database()` makes a fresh database and returns its
URL. Speed over surviving a power cut (`fsync=off`): daemon crashes are still real crashes.

Bench scripts import it as `postgres` (their own folder is on sys.path); the tests as
`bench.postgres` (pytest puts the repository root on sys.path, `tests` being a package).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 60


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be started here (not installed, or no user to run it as); the text says why."""


def postgres_bin() -> Path | None:
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

    def remove(self) -> None:
        """Stop the server at once and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def running(self) -> bool:
        return self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def database(self) -> str:
        """A fresh, empty database (the server started again if someone stopped it); its URL."""
        if not self.running():
            self.start()
        name = "t_" + secrets.token_hex(6)
        proc = self.run(
            str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "triggerd", "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}",
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {proc.stderr}")
        return self.url(name)


def start_postgres(port: int) -> PostgresServer:
    """initdb and start a server on 127.0.0.1:port; PostgresUnavailable when it cannot be had here."""
    bin_dir = postgres_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        raise PostgresUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user: Callable[[], None] | None = None
    root = Path(tempfile.mkdtemp(prefix="triggerd-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable("running as root and there is no 'postgres' user to run PostgreSQL as") from None
        os.chown(root, owner.pw_uid, owner.pw_gid)

        def as_user() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

    server = PostgresServer(bin_dir, root, port, as_user)
    proc = server.run(
        str(bin_dir / "initdb"), "-D", str(server.data), "-U", "triggerd", "--auth=trust", "-E", "UTF8",
        "--no-sync", "--locale=C",
    )  # fmt: skip
    if proc.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {proc.stderr.strip()[-500:]}")
    server.start()
    return server
