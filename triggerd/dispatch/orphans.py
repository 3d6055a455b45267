"""What keeps a crash from leaving an agent running beside its own retry (SPEC 5.2, Durability).

A command attempt's process group is stored when it starts; a daemon that takes an attempt over
(after its own crash, or another daemon's lease ran out) ends that group first, if it still runs
on this machine. An attempt's tool calls (SPEC 5.1) are stored as they start and end, so that
a crash does not lose the record of what an agent did.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable
from typing import Any

from triggerd.agents.abc import AgentRequest
from triggerd.agents.process_group import end_if_ours
from triggerd.errors import StoreError
from triggerd.masking import mask_value
from triggerd.runs import ProcessGroup
from triggerd.store.abc import Interrupted, Store

log = logging.getLogger("triggerd.dispatch")


async def record_steps(store: Store, request: AgentRequest, steps: list[dict[str, Any]]) -> None:
    """Store an attempt's tool calls so far (SPEC 5.1), masked, so that a crash does not lose them.

    On a store error the attempt goes on; its end records every step again."""
    stored = store.record_steps(request.run_id, request.attempt, mask_value(copy.deepcopy(steps)))
    await _record(stored, "tool calls", request)


async def record_process(store: Store, request: AgentRequest, group: ProcessGroup) -> None:
    """Store a command attempt's process group, so that a start after a crash can end it.

    On a store error the attempt itself can still succeed; only a crash during it would leave the
    command running."""
    await _record(store.record_process(request.run_id, request.attempt, group), "process group", request)


async def _record(stored: Awaitable[None], what: str, request: AgentRequest) -> None:
    """Await a record of the attempt; a store error is logged, not raised: the attempt goes on."""
    try:
        await stored
    except StoreError as exc:
        log.warning(
            "cannot record the %s of attempt %d: %s",
            what,
            request.attempt,
            exc,
            extra={"run_id": request.run_id, "trigger_id": request.trigger_id, "agent_id": request.agent_id},
        )


async def end_interrupted_processes(interrupted: list[Interrupted]) -> None:
    """End the process groups attempts taken over left running, before any is retried.

    Only a group whose leader is still the recorded process (same pid, start time and boot)
    is signalled: a pid since reused by another process, one from before a reboot, or one
    on another machine, is not.
    """
    found = [(attempt, attempt.process) for attempt in interrupted if attempt.process is not None]
    ended = await asyncio.gather(*(end_if_ours(process) for _, process in found))
    for (attempt, process), how in zip(found, ended, strict=True):
        if how is not None:
            log.warning(
                "process group %d of interrupted attempt %d was still running: %s",
                process.pgid,
                attempt.number,
                how,
                extra={"run_id": attempt.run_id},
            )
