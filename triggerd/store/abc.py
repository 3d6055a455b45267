"""The store contract: every durable fact about runs goes through these methods.

Rules every implementation keeps:

- A method returns only after what it wrote is committed (and, for `sync: full`,
  flushed to disk). Callers acknowledge a firing only after `create_run` returned.
- Methods are coroutines and never block the event loop.
- A failure raises StoreError and leaves the store as it was before the call.
- Times are RFC 3339 UTC strings as `triggerd.clock.isoformat` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from triggerd.runs import ProcessGroup, Run, RunStatus


@dataclass(frozen=True, slots=True)
class Created:
    """What create_run did: the run id, and whether the idempotency key already named a run."""

    run_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A broker message that could not become an event (SPEC 5.4), kept for GET /v1/dead-letters."""

    id: str
    source_id: str
    reason: str
    payload: bytes  # the raw body, cut at 64 KiB
    headers: Mapping[str, Any]
    broker_id: str
    received_at: str

    def to_json(self) -> dict[str, Any]:
        text = self.payload.decode("utf-8", errors="replace")
        return {
            "id": self.id,
            "source_id": self.source_id,
            "reason": self.reason,
            "payload": text,
            "headers": dict(self.headers),
            "broker_id": self.broker_id,
            "received_at": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class TriggerStats:
    runs: Mapping[str, int]
    last_run: Run | None


class Store(Protocol):
    async def open(self) -> None:
        """Create or migrate the database and get ready; raises StoreError."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the database."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers, and takes writes if the last commit failed (for /readyz)."""
        ...

    async def create_run(self, run: Run, dedupe_seconds: float = 0.0, now: str = "") -> Created:
        """Insert a new run, unless run.idempotency_key names an unexpired run of the same trigger.

        With a key and dedupe_seconds > 0 the key is remembered until now + dedupe_seconds.
        A replay (run.replay_of set) also clears the original's dead-letter mark.
        A schedule run (run.source is schedule) claims its slot (trigger, nominal_time):
        if the slot was claimed before, nothing is inserted and the existing run is named.
        """
        ...

    async def last_slots(self) -> dict[str, str]:
        """The latest claimed nominal time of each trigger's schedule."""
        ...

    async def load_windows(self) -> list[tuple[str, str, str, Any]]:
        """Every saved counting window: (trigger id, group key, fingerprint, counted events)."""
        ...

    async def save_windows(self, windows: list[tuple[str, str, str, Any]]) -> None:
        """Replace these counting windows in one commit; an empty list of events deletes the window."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    async def list_runs(
        self,
        *,
        trigger_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """Newest first; `before` is a run id or an RFC 3339 instant to page back from."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[Run]:
        """Runs whose final failure has not been replayed, newest first."""
        ...

    async def unfinished_runs(self) -> list[Run]:
        """Runs to resume on start: pending, running, and cancelled for shutdown; oldest first."""
        ...

    async def start_attempt(self, run_id: str, number: int, at: str) -> None:
        """Mark the run running and record the start of attempt `number`."""
        ...

    async def record_process(self, run_id: str, number: int, process: ProcessGroup) -> None:
        """Store the process group a command started for attempt `number` (SPEC 5.2).

        An attempt of a run found `running` at start carries it as `Attempt.process`, so
        that the daemon can end what a crash left running before the retry starts.
        """
        ...

    async def end_attempt(
        self,
        run_id: str,
        number: int,
        *,
        status: RunStatus,
        error: str | None,
        at: str,
        then: RunStatus,
        output: Any = None,
        usage: Any = None,
        reason: str | None = None,
        next_attempt_at: str | None = None,
        dead_letter: bool = False,
    ) -> None:
        """Close attempt `number` with `status`, and move the run to `then`.

        `then` is PENDING (a retry, due at next_attempt_at) or a final status, which
        also sets finished_at, output, usage, error, reason and the dead-letter mark.
        """
        ...

    async def finish_run(
        self, run_id: str, status: RunStatus, *, at: str, reason: str | None = None, error: str | None = None
    ) -> None:
        """End a run that has no attempt under way (a queued run cancelled, say)."""
        ...

    async def requeue(self, run_id: str, *, at: str | None = None) -> None:
        """Make a run pending again (resume after shutdown), due at `at` (None: now)."""
        ...

    async def trigger_stats(self) -> dict[str, TriggerStats]:
        """Per trigger: run counts by status and the newest run."""
        ...

    async def prune(self, finished_before: str, now: str) -> int:
        """Delete final runs finished before the instant, and expired dedupe keys; returns runs deleted."""
        ...

    # --- sources (SPEC 5.4) ------------------------------------------------------
    # Plain SQL: a table of seen event ids keyed (source_id, event_id) with an expiry, one of
    # dead messages, one of cursors keyed by source id.

    async def event_seen(self, source_id: str, event_id: str, now: str) -> bool:
        """Whether commit_event recorded this event id of this source with an expiry after `now`."""
        ...

    async def commit_event(
        self, source_id: str, event_id: str, expires_at: str, windows: list[tuple[str, str, str, Any]]
    ) -> None:
        """In one commit: record the event id of the source until `expires_at` (replacing an
        expired record of it) and replace the counting windows as save_windows does."""
        ...

    async def add_dead_message(self, message: DeadMessage) -> None:
        """Record a poison message (committed on return), unless one with its id is recorded
        (INSERT ... ON CONFLICT DO NOTHING); the caller cuts the payload."""
        ...

    async def dead_messages(self, limit: int = 100, source_id: str | None = None) -> list[DeadMessage]:
        """Poison messages, newest first, of one source or all."""
        ...

    async def source_cursor(self, source_id: str) -> str | None:
        """The position saved for a source that keeps none on its broker (SSE's Last-Event-ID)."""
        ...

    async def save_source_cursor(self, source_id: str, cursor: str, at: str) -> None:
        """Save the source's position, replacing the one before (committed on return)."""
        ...
