"""Watching the definition files (SPEC 8): any change to a *.yaml or *.yml file there, or to the
settings file, asks for a reload. Editors that save through a temporary file and a rename are
seen as the target file changing; their swap and backup files are ignored."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from triggerd.config.models import Settings

log = logging.getLogger("triggerd.watch")
DEBOUNCE_MS = 150  # a new file is live well within a second of being written


def watched_folders(settings: Settings) -> tuple[list[Path], list[Path]]:
    """The folders to watch: every definitions folder (or a glob's fixed part) with what is below
    it, and the settings file's folder by itself, unless a definitions folder holds it already.

    Only the settings file matters in its folder, where the store's files often live too (the
    default configuration keeps them in .triggerd/ beside it): watched with what is below it,
    every commit woke the watcher (issue 17).
    """
    below: set[Path] = set()
    for entry in settings.definitions:
        target = settings.base_dir / entry
        if glob.has_magic(entry):
            fixed = Path(str(target).split("*", 1)[0].split("?", 1)[0].split("[", 1)[0])
            below.add(fixed if fixed.is_dir() else fixed.parent)
        else:
            below.add(target if target.is_dir() else target.parent)
    alone: set[Path] = set()
    if settings.path is not None:
        folder = settings.path.parent
        if not any(folder == f or folder.is_relative_to(f) for f in below):
            alone.add(folder)
    return sorted(f for f in below if f.is_dir()), sorted(f for f in alone if f.is_dir())


class _SettingsFile:
    """In the settings file's folder, a change counts when what the settings path names changed
    (followed through symbolic links): an edit, a save through a rename, or a Kubernetes ConfigMap
    swapping the `..data` link to a new folder. The store's files beside it change nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = self.signature()

    def signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size

    def __call__(self, change: Change, path: str) -> bool:
        now = self.signature()
        if now == self.seen:
            return False
        self.seen = now
        return True


class _Definitions(DefaultFilter):
    def __call__(self, change: Change, path: str) -> bool:
        name = Path(path).name
        return super().__call__(change, path) and name.endswith((".yaml", ".yml")) and not name.startswith(".")


async def watch(settings: Settings, on_change: Callable[[str], Awaitable[object]], stop: asyncio.Event) -> None:
    """Call on_change(reason) after each burst of changes, until `stop` is set."""
    below, alone = watched_folders(settings)

    async def follow(folders: list[Path], recursive: bool, only: Callable[[Change, str], bool]) -> None:
        if not folders:
            return
        changed = awatch(*folders, watch_filter=only, debounce=DEBOUNCE_MS, stop_event=stop, recursive=recursive)
        async for changes in changed:
            names = sorted({Path(path).name for _, path in changes})
            await on_change(f"files changed: {', '.join(names)}")

    async with asyncio.TaskGroup() as group:  # one failing stops the other
        group.create_task(follow(below, True, _Definitions()))
        if settings.path is not None:
            group.create_task(follow(alone, False, _SettingsFile(settings.path)))
