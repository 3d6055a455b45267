"""A private RabbitMQ node for the benches and the tests: its name, ports, epmd, data and cookie
(HOME) all in one folder, so that it never meets the machine's own node (Debian's
`rabbitmq-server`, run as root or not)."""

from __future__ import annotations

import shutil
from pathlib import Path


def node_env(folder: Path, port: int, dist: int, epmd: int, name: str) -> dict[str, str]:
    """The environment that makes `rabbitmq-server` a node of its own below `folder`, listening on
    127.0.0.1:`port` (AMQP), `dist` (Erlang distribution) and its own epmd on `epmd`."""
    (folder / "enabled_plugins").write_text("[].\n")
    (folder / "rabbitmq.conf").write_text("loopback_users = none\n")
    return {
        "HOME": str(folder),
        "RABBITMQ_NODENAME": f"{name}-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(folder / "pid"),
    }


def server_binary(found: str | None = None) -> str:
    """The server script itself (Debian's /usr/sbin wrapper switches to the rabbitmq user)."""
    binary = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    return str(binary) if binary.exists() else found or shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
