"""This daemon among those sharing the store (SPEC 10): its name, its registration, and the dead.

A daemon starting registers itself, and makes the claims of daemons it knows to be dead expire
at once, so that their runs are taken over now rather than after their lease: its own previous
life (the same instance name), daemons of this machine whose process is gone (same boot, and no
process with the recorded pid and start time), and daemons named by default (host:pid) after
this host that ran before its last reboot. A daemon on another machine is known dead only by its
lease running out.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from hashlib import sha256

from triggerd.agents.process_group import boot_id, identify_self, is_ours
from triggerd.clock import Clock, isoformat
from triggerd.config.models import Configuration
from triggerd.dispatch.flow import claim_limits
from triggerd.store.abc import Instance, Loaded, Store

log = logging.getLogger("triggerd.dispatch")


def default_instance() -> str:
    """host:pid, the instance name of a daemon whose settings name none (SPEC 10)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def loaded(configuration: Configuration) -> Loaded:
    """What a claim needs to know of the loaded definitions."""
    return Loaded(
        {t.id: (t.max_concurrent, t.retry.max_attempts) for t in configuration.triggers.values()},
        {a.id: a.max_concurrent for a in configuration.agents.values()},
        claim_limits(configuration),
    )


def fingerprint(configuration: Configuration) -> str:
    """One digest of every loaded definition: daemons sharing a store should show the same."""
    digest = sha256()
    for kind, items in (("trigger", configuration.triggers), ("agent", configuration.agents)):
        for key in sorted(items):
            digest.update(f"{kind}:{key}:{items[key].fingerprint}\n".encode())
    return digest.hexdigest()[:16]


def is_dead(instance: Instance, me: str) -> bool:
    """Whether a registered daemon is known dead without waiting for its leases (see the module doc)."""
    if instance.id == me:
        return True  # a daemon of this name ran before this start: this is its next life
    process = instance.process
    if process is None:
        return False
    if process.boot_id != boot_id():
        # Another machine, or this one before a reboot: only the default name (host:pid) tells.
        return instance.id.startswith(f"{socket.gethostname()}:")
    return not is_ours(process)


async def register(
    store: Store, me: str, address: str, configuration: Configuration, clock: Clock, lease: float
) -> None:
    """Register this daemon; expire the claims of the dead; warn of live daemons with other definitions."""
    now = clock.now()
    others = await store.instances()
    dead = [instance.id for instance in others if is_dead(instance, me)]
    mine = fingerprint(configuration)
    await store.register_instance(Instance(me, address, isoformat(now), mine, isoformat(now), identify_self()))
    await store.expire_claims(dead, isoformat(now))
    recent = isoformat(now - timedelta(seconds=2 * lease))
    for other in others:
        if other.id not in dead and other.last_seen >= recent and other.fingerprint != mine:
            log.warning(
                "daemon %s shares this store with other definitions (fingerprint %s, here %s)",
                other.id,
                other.fingerprint,
                mine,
            )
