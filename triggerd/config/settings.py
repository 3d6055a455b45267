"""The settings file (SPEC 2.1): where it is, its defaults, and the rules on listening."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from triggerd.config.documents import Document
from triggerd.config.durations import parse_duration
from triggerd.config.models import (
    AdminSettings,
    Limits,
    Listen,
    LoggingSettings,
    Secret,
    ServerSettings,
    Settings,
    StoreSettings,
    SyncLevel,
)
from triggerd.errors import DurationError

# Where a postgresql:// store needs what the [postgres] extra installs (the same words open_store uses).
POSTGRES_EXTRA = "the postgresql store needs the postgres extra: pip install 'triggerd[postgres]'"

DEFAULT_DEFINITIONS = ("triggers", "agents")
LOCAL_SETTINGS = Path("config") / "triggerd.yaml"  # relative to the working directory
SYSTEM_SETTINGS = Path("/etc/triggerd/triggerd.yaml")
MIN_TOKEN_LENGTH = 16


def default_settings_path(cwd: Path) -> Path:
    """config/triggerd.yaml when it exists in the working directory, else /etc/triggerd/triggerd.yaml."""
    local = cwd / LOCAL_SETTINGS
    return local if local.exists() else SYSTEM_SETTINGS


def parse_listen(text: str) -> Listen:
    """'host:port' or '[v6]:port' -> Listen; raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port with a port from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Listen(host or "0.0.0.0", int(port))  # noqa: S104 - an empty host means every address


def store_url(raw: str | None, base_dir: Path, env: Mapping[str, str]) -> str:
    """The store URL with a relative sqlite path made absolute (SPEC 2.5)."""
    if raw is None:
        state = env.get("STATE_DIRECTORY")
        # systemd may pass several directories separated by ':'; the first is ours.
        folder = Path(state.split(":")[0]) if state else base_dir / ".triggerd"
        return f"sqlite:///{folder / 'triggerd.db'}"
    if raw.startswith("sqlite:///") and not raw.startswith("sqlite:////"):
        return f"sqlite:///{(base_dir / raw.removeprefix('sqlite:///')).resolve()}"
    return raw


def check_store_url(doc: Document, url: str) -> None:
    """A problem at /store/url unless the URL names a store this installation can open.

    Problems name only the scheme, host, port and database: the rest of a URL may hold a password.
    """
    if url.startswith("sqlite:///"):
        return
    if not url.startswith("postgresql://"):
        scheme = url.partition(":")[0]
        doc.fail("/store/url", f"store URL scheme {scheme!r} is not supported: use sqlite:///PATH or postgresql://...")
        return
    if not all(_installed(name) for name in ("psycopg", "psycopg_pool")):
        doc.fail("/store/url", POSTGRES_EXTRA)
        return
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        ports = str(conninfo_to_dict(url).get("port") or "")  # libpq's own parser, as the store connects
    except psycopg.Error:  # not quoted: libpq's message may hold the URL, password and all
        ports = "not parsed"
    if not all(port.isdigit() for port in ports.split(",") if port):
        doc.fail(
            "/store/url", "the postgresql:// URL does not parse (libpq URL syntax: postgresql://user@host:5432/db)"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules as None: blocked
        return False


def build_settings(
    doc: Document | None, path: Path | None, base_dir: Path, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from a schema-valid document (None: every default); problems go to doc."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = (doc.value if doc is not None else None) or {}
    server, admin, store = raw.get("server", {}), raw.get("admin", {}), raw.get("store", {})
    limits, logging = raw.get("limits", {}), raw.get("logging", {})

    def listen(pointer: str, text: str) -> Listen:
        try:
            return parse_listen(text)
        except ValueError as exc:
            if doc is not None:
                doc.fail(pointer, str(exc))
            return Listen("127.0.0.1", 0)

    def timeout(pointer: str, value: object, default: float) -> float:
        """A duration longer than 0 (0 would close every connection at once); else a problem."""
        if doc is None:
            return default
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            doc.fail(pointer, str(exc))
            return default
        if seconds == 0:
            doc.fail(pointer, "must be longer than 0s: 0 would close every connection at once")
            return default
        return seconds

    def lease(pointer: str, value: object) -> float:
        """A claim's lease (SPEC 10): renewed every third of it, so below 1s renewals would be all there is."""
        if doc is None:
            return 30.0
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            doc.fail(pointer, str(exc))
            return 30.0
        if seconds < 1:
            doc.fail(pointer, "must be at least 1s: a lease is renewed every third of it")
            return 30.0
        return seconds

    server_listen = listen("/server/listen", server.get("listen", "127.0.0.1:8080"))
    admin_listen = listen("/admin/listen", admin["listen"]) if admin.get("listen") else None
    # An empty token (say ${TOKEN:-} with TOKEN unset) would let anyone in: it is no token.
    tokens = tuple(Secret(t) for t in admin.get("tokens", []) if t.strip())
    if doc is not None:
        for i, token in enumerate(admin.get("tokens", [])):
            pointer = f"/admin/tokens/{i}"
            # A ${NAME} still as written was not set: validate warns about that; it is no short token.
            unset = "${" in token and pointer not in doc.substituted
            if token.strip() and not unset and len(token) < MIN_TOKEN_LENGTH:
                doc.fail(pointer, f"an admin token must be at least {MIN_TOKEN_LENGTH} characters long")
    settings = Settings(
        path=path,
        base_dir=base_dir,
        server=ServerSettings(
            server_listen,
            server.get("max_body_bytes", 1_048_576),
            (doc.networks("/server/trusted_proxies", server.get("trusted_proxies", [])) if doc is not None else ()),
            timeout("/server/read_timeout", server.get("read_timeout", "30s"), 30.0),
            timeout("/server/keepalive_timeout", server.get("keepalive_timeout", "75s"), 75.0),
        ),
        admin=AdminSettings(admin_listen, tokens),
        store=StoreSettings(
            url=store_url(store.get("url"), base_dir, env),
            retention=doc.duration("/store/retention", store.get("retention", "30d")) if doc else 30 * 86400.0,
            sync=SyncLevel(store.get("sync", "normal")),
            instance=store.get("instance", ""),
            lease=lease("/store/lease", store.get("lease", "30s")),
            pool_size=store.get("pool_size", 10),
        ),
        definitions=tuple(raw.get("definitions", DEFAULT_DEFINITIONS)),
        limits=Limits(
            limits.get("max_concurrent_runs", 16),
            float(limits.get("shutdown_grace_seconds", 30)),
            limits.get("max_event_chain_depth", 8),
        ),
        logging=LoggingSettings(logging.get("level", "info"), logging.get("format", "json")),
    )
    if doc is not None:
        check_store_url(doc, settings.store.url)
    admin_at = admin_listen or server_listen
    if doc is not None and not admin_at.is_loopback and not tokens:
        pointer = "/admin/listen" if admin_listen else "/server/listen"
        doc.fail(
            pointer,
            f"the admin API would listen on {admin_at}, which is not loopback, with no "
            "admin.tokens; set admin.tokens or a loopback admin.listen",
        )
    return settings
