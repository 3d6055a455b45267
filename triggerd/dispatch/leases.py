"""Keeping this daemon's claims alive (SPEC 10): renew every third of the lease, stop what is lost.

A lease is renewed every `lease / 3`. A renewal that fails (the store is unreachable) leaves
the old lease running out: when two thirds of it have passed since the last renewal that
succeeded, the run is reported lost and its process stopped, a third of the lease before
another daemon may take it over, so that the same run never goes on in two places at once.
Each renewal is also this daemon's heartbeat (its instance's last_seen).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from triggerd.clock import Clock, isoformat
from triggerd.errors import StoreError
from triggerd.store.abc import Store

log = logging.getLogger("triggerd.dispatch")


class LeaseKeeper:
    """The leases this daemon holds: run id -> the monotonic time by which its process must stop."""

    def __init__(
        self,
        store: Store,
        instance: str,
        lease: float,
        clock: Clock,
        lost: Callable[[str], None],
        cancel: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self.instance = instance
        self.lease = lease
        self.clock = clock
        self._lost = lost  # told of a run whose lease this daemon no longer holds (or may not)
        self._cancel = cancel  # told of a run another daemon asked to cancel, with the reason
        self._deadlines: dict[str, float] = {}
        self._renewal: asyncio.Task[None] | None = None
        self._next_renewal = 0.0

    @property
    def every(self) -> float:
        return self.lease / 3

    def lease_until(self) -> str:
        """The end of a lease taken or renewed now, as the store records it."""
        return isoformat(self.clock.now() + timedelta(seconds=self.lease))

    def add(self, run_id: str, claimed_at: float) -> None:
        """A run claimed at monotonic time `claimed_at` (before the claim was sent)."""
        self._deadlines[run_id] = claimed_at + self.lease - self.every

    def remove(self, run_id: str) -> None:
        self._deadlines.pop(run_id, None)

    def tick(self) -> None:
        """Renew when due (unless a renewal is still under way), and report what ran out of time."""
        now = self.clock.monotonic()
        if now >= self._next_renewal and (self._renewal is None or self._renewal.done()):
            self._next_renewal = now + self.every
            self._renewal = asyncio.create_task(self._renew(), name="lease-renewal")
        for run_id in [r for r, deadline in self._deadlines.items() if now >= deadline]:
            del self._deadlines[run_id]
            log.error("lease not renewed in time: stopping the run", extra={"run_id": run_id})
            self._lost(run_id)

    def renew_now(self) -> None:
        """Renew at once (a cancel was asked through another daemon: the renewal's answer tells which)."""
        if self._deadlines:
            self._next_renewal = 0.0
            self.tick()

    async def stop(self) -> None:
        if self._renewal is not None and not self._renewal.done():
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)

    async def _renew(self) -> None:
        ids = list(self._deadlines)
        sent = self.clock.monotonic()
        try:
            renewal = await self.store.renew_leases(self.instance, ids, isoformat(self.clock.now()), self.lease_until())
        except StoreError as exc:
            log.warning("cannot renew %d leases: %s", len(ids), exc)
            return
        for run_id in ids:
            if run_id not in self._deadlines:
                continue  # ended meanwhile
            if run_id in renewal.held:
                self._deadlines[run_id] = sent + self.lease - self.every
            else:
                del self._deadlines[run_id]
                log.error("lease lost: another daemon took the run over", extra={"run_id": run_id})
                self._lost(run_id)
        for run_id, reason in renewal.cancel.items():
            self._cancel(run_id, reason)
