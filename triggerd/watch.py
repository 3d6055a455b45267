"""Watching the definition files (SPEC 8): any change to a *.yaml or *.yml file there, or to the
settings file, asks for a reload. Editors that save through a temporary file and a rename are
seen as the target file changing; their swap and backup files are ignored."""

from __future__ import annotations

import asyncio
import glob
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from triggerd.config.models import Settings

log = logging.getLogger("triggerd.watch")
DEBOUNCE_MS = 150  # a new file is live well within a second of being written


def watched_folders(settings: Settings) -> list[Path]:
    """The folders to watch: every definitions folder (or a glob's fixed part), and the settings file's."""
    folders: set[Path] = set()
    for entry in settings.definitions:
        target = settings.base_dir / entry
        if glob.has_magic(entry):
            fixed = Path(str(target).split("*", 1)[0].split("?", 1)[0].split("[", 1)[0])
            folders.add(fixed if fixed.is_dir() else fixed.parent)
        else:
            folders.add(target if target.is_dir() else target.parent)
    if settings.path is not None:
        folders.add(settings.path.parent)
    return sorted(f for f in folders if f.is_dir())


class _Definitions(DefaultFilter):
    def __call__(self, change: Change, path: str) -> bool:
        name = Path(path).name
        return super().__call__(change, path) and name.endswith((".yaml", ".yml")) and not name.startswith(".")


async def watch(settings: Settings, on_change: Callable[[str], Awaitable[object]], stop: asyncio.Event) -> None:
    """Call on_change(reason) after each burst of changes, until `stop` is set."""
    folders = watched_folders(settings)
    if not folders:
        return
    async for changes in awatch(*folders, watch_filter=_Definitions(), debounce=DEBOUNCE_MS, stop_event=stop):
        names = sorted({Path(path).name for _, path in changes})
        await on_change(f"files changed: {', '.join(names)}")
