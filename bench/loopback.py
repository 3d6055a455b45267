"""What every bench script needs to run servers on loopback: a free port, a daemon, and waiting for a listener."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Return once something listens on 127.0.0.1:port; exit the script if nothing does in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port} after {timeout:g} s")


def start_daemon(
    root: Path, env: dict[str, str], output: IO[Any] | int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """`triggerd run` on ROOT/triggerd.yaml from ROOT, under cProfile into $BENCH_PROFILE when that is set."""
    profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
    return subprocess.Popen(
        [sys.executable, *profile, "-m", "triggerd", "run", "--config", str(root / "triggerd.yaml")],
        cwd=root,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
    )


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The machine's `redis-server` on a free loopback port, its files in `folder`, no snapshots;
    listening on return. The caller terminates it."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    wait_port(port)
    return server, port
