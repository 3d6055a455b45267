"""Command agents' process groups: who leads one (so that a reused id is never mistaken), and ending one.

A command runs in its own session, so its pid is also its process group id. The store keeps
that id with the leader's start time (/proc/PID/stat field 22, clock ticks since boot) and the
boot id: after a crash, a restarted daemon ends the group only if a process with that pid,
that start time and that boot id still exists (SPEC 5.2). Linux only, like the rest of
triggerd's process handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from pathlib import Path

from triggerd.runs import ProcessGroup

KILL_GRACE_SECONDS = 5.0
KILLED_WAIT_SECONDS = 1.0  # SIGKILL cannot be refused, but a process in uninterruptible sleep takes it late
POLL_SECONDS = 0.05
PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"


@functools.cache  # fixed for the life of the process
def boot_id() -> str:
    """This boot's id ('' where /proc does not say: then no record ever matches)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when the process is gone.

    The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    """
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def identify(pid: int, parent: int | None = None) -> ProcessGroup | None:
    """The record of the process group `pid` leads, or None if it is gone or leads no group.

    With `parent`, the process must also be that process's child: a pid read just after the
    child was reaped and the id reused is never recorded as ours.
    """
    fields = _stat(pid)
    if fields is None or int(fields[2]) != pid or (parent is not None and int(fields[1]) != parent):
        return None
    return ProcessGroup(pgid=pid, start_ticks=int(fields[19]), boot_id=boot_id())


def identify_self() -> ProcessGroup | None:
    """This process in the same form (its pid as `pgid`): a daemon registers it, so that another
    daemon of this machine can tell, with is_ours, whether it has died (SPEC 10)."""
    fields = _stat(os.getpid())
    if fields is None:
        return None
    return ProcessGroup(pgid=os.getpid(), start_ticks=int(fields[19]), boot_id=boot_id())


def is_ours(group: ProcessGroup) -> bool:
    """Whether the group's leader is still the process recorded: same pid, start time and boot.

    A zombie leader counts (its id cannot be reused until it is reaped, and its children may
    still run); a pid now held by another process does not.
    """
    if not group.boot_id or group.boot_id != boot_id():
        return False
    fields = _stat(group.pgid)
    return fields is not None and int(fields[19]) == group.start_ticks


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting to be reaped do not)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    leader = _stat(pgid)
    if leader is not None and int(leader[2]) == pgid and leader[0] != "Z":
        return True  # the usual case, without reading every process
    # killpg answers for zombies too, and an orphan's zombie waits for init to reap it.
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def end_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> bool:
    """SIGTERM to the whole group, SIGKILL to what is left after `grace`; True if SIGKILL was needed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    signal_group(pgid, signal.SIGTERM)
    # No event tells when a process group empties: poll it.
    while group_alive(pgid):
        if loop.time() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            deadline = loop.time() + KILLED_WAIT_SECONDS
            while group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL_SECONDS)
            return True
        await asyncio.sleep(POLL_SECONDS)
    return False


async def end_if_ours(group: ProcessGroup, grace: float = KILL_GRACE_SECONDS) -> str | None:
    """End a recorded group if its leader is still the recorded process: 'terminated' (it left on
    SIGTERM) or 'killed' (it needed SIGKILL); None when nothing of it runs or the pid is another's."""
    if not is_ours(group) or not group_alive(group.pgid):
        return None
    return "killed" if await end_group(group.pgid, grace) else "terminated"
