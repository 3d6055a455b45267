"""Where runs live: the contract (abc.py) and its implementations."""

from __future__ import annotations

from pathlib import Path

from triggerd.config.models import StoreSettings
from triggerd.errors import ConfigError
from triggerd.store.abc import Store


def open_store(settings: StoreSettings) -> Store:
    """The store a store URL names (not yet opened: call `await store.open()`)."""
    if settings.url.startswith("sqlite:///"):
        from triggerd.store.sqlite import SqliteStore

        return SqliteStore(Path(settings.url.removeprefix("sqlite:///")), settings.sync)
    raise ConfigError(f"store URL {settings.url.split(':', 1)[0]}:// is not supported (use sqlite:///PATH)")
