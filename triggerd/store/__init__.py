"""Where runs live: the contract (abc.py) and its implementations."""

from __future__ import annotations

from pathlib import Path

from triggerd.config.models import StoreSettings
from triggerd.config.settings import POSTGRES_EXTRA
from triggerd.errors import ConfigError
from triggerd.store.abc import Store


def open_store(settings: StoreSettings) -> Store:
    """The store a store URL names (not yet opened: call `await store.open()`)."""
    if settings.url.startswith("sqlite:///"):
        from triggerd.store.sqlite import SqliteStore

        return SqliteStore(Path(settings.url.removeprefix("sqlite:///")), settings.sync)
    if settings.url.startswith("postgresql://"):
        # Imported here, so that triggerd without the extra runs on SQLite.
        try:
            from triggerd.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(f"{POSTGRES_EXTRA} ({exc})") from exc
        return PostgresStore(settings.url, settings.pool_size)
    raise ConfigError(
        f"store URL {settings.url.split(':', 1)[0]}:// is not supported (use sqlite:///PATH or postgresql://...)"
    )
