"""The store contract: every durable fact about runs goes through these methods.

Rules every implementation keeps:

- A method returns only after what it wrote is committed (and, for `sync: full`,
  flushed to disk). Callers acknowledge a firing only after `create_run` returned.
- Methods are coroutines and never block the event loop.
- A failure raises StoreError and leaves the store as it was before the call.
- Times are RFC 3339 UTC strings as `triggerd.clock.isoformat` writes them.

Claims and leases (SPEC 10): a run is *claimed* by one daemon (an instance) when its attempt
starts, with a lease the daemon renews while the run goes on. A `running` run always has a
claim; a `pending` run never has one. Whoever finds a lease expired takes the run over: its
open attempt ends `failed`, error "interrupted", and the run is retried if attempts remain.
Limits (a trigger's and an agent's max_concurrent) are counted at claim time over the runs
every daemon sharing the store has claimed. docs/scale-out.md ("Claims and leases") gives the
PostgreSQL statements each method runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from triggerd.runs import ProcessGroup, Run, RunStatus


@dataclass(frozen=True, slots=True)
class Created:
    """What create_run did: the run id, and whether the idempotency key already named a run."""

    run_id: str
    duplicate: bool = False
    superseded: int = 0  # pending debounced runs of the same burst this run ended (skipped, SPEC 12)


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


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The runs at a glance (the console's overview, SPEC 13), read in one call."""

    by_status: Mapping[str, int]  # runs created at or after `since`, by status
    pending: int  # the queue depth: every pending run, whenever created
    oldest_pending: str | None  # created_at of the oldest pending run
    dead_letters: int  # runs whose final failure has not been replayed


@dataclass(frozen=True, slots=True)
class Instance:
    """A daemon sharing the store (GET /v1/instances)."""

    id: str
    address: str  # where its HTTP server listens, as configured
    started_at: str
    fingerprint: str  # of its loaded definitions: daemons that differ are warned about
    last_seen: str
    process: ProcessGroup | None = None  # its own process (pid, start ticks, boot): tells a dead one on this machine

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "started": self.started_at,
            "last_seen": self.last_seen,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a claiming daemon has loaded: only runs of these triggers and agents are claimed."""

    triggers: Mapping[str, tuple[int, int]]  # trigger id -> (max_concurrent, retry.max_attempts)
    agents: Mapping[str, int | None]  # agent id -> max_concurrent (None: no cap)
    flow: Mapping[str, FlowLimits] = field(default_factory=dict)  # triggers with claim-time flow control


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """A trigger's flow control decided at claim time (SPEC 12), over every daemon's runs."""

    keyed: bool  # max_concurrent holds per concurrency_key value (the run's keys.concurrency)
    throttle: tuple[int, float] | None  # (limit, per seconds): runs started per window, per keys.throttle


@dataclass(frozen=True, slots=True)
class GroupState:
    """A flow-control group's runs now: in flight, the earliest a pending one is due, first starts since an instant."""

    running: int
    pending: int
    next_due: str | None
    started: tuple[str, ...]  # oldest first

    def to_json(self) -> dict[str, Any]:
        return {"running": self.running, "pending": self.pending, "next_due": self.next_due, "started": self.started}


@dataclass(frozen=True, slots=True)
class Spend:
    """What a trigger or an agent spent (SPEC 12): tokens over the sliding day, runs over the sliding hour."""

    tokens: int
    runs: int

    def to_json(self) -> dict[str, int]:
        return {"tokens_per_day": self.tokens, "runs_per_hour": self.runs}


@dataclass(frozen=True, slots=True)
class Interrupted:
    """An attempt whose lease expired, ended by a takeover; its process group may still run on its machine."""

    run_id: str
    number: int
    process: ProcessGroup | None
    retried: bool  # the run went back to pending (else it failed for good, a dead letter)


@dataclass(frozen=True, slots=True)
class Claims:
    """What claim_runs did."""

    runs: list[Run]  # claimed, oldest first; each one's last attempt is the one just started
    interrupted: list[Interrupted]  # attempts taken over from expired leases
    next_due: str | None  # the earliest retry not yet due (a wake-up to set), None if none
    pending: int | None  # with count_pending: the pending runs in the store after the claim (queue depth)


@dataclass(frozen=True, slots=True)
class Renewal:
    """What renew_leases found: the runs still held, and which of them another daemon asked to cancel."""

    held: frozenset[str]
    cancel: Mapping[str, str]  # run id -> cancel reason


@dataclass(frozen=True, slots=True)
class TriggerLoad:
    """A trigger's runs in flight across every daemon: what overlap decisions count (SPEC 3, 10)."""

    running: int
    pending: int
    oldest_running: str | None  # the run `overlap: replace` cancels


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

    async def listen(self, callback: Callable[[str], None]) -> None:
        """Call `callback` whenever another daemon gave the daemons sharing the store something to
        do; a no-op where the store has no notifications (SQLite).

        PostgreSQL: a dedicated connection LISTENs on the channel that writes NOTIFY at commit (a
        pending run created or requeued, a run ended, a lease taken over or expired, a cancel
        asked; the payload says which, "cancel" for a cancel request) and connects again with
        backoff when the database goes away, calling back once after each (re)connection. A
        wake-up is a hint: polling stays what correctness relies on. Stopped by close().
        """
        ...

    async def create_run(self, run: Run, dedupe_seconds: float = 0.0, now: str = "") -> Created:
        """Insert a new run, unless run.idempotency_key names an unexpired run of the same trigger.

        With a key and dedupe_seconds > 0 the key is remembered until now + dedupe_seconds.
        A replay (run.replay_of set) also clears the original's dead-letter mark.
        A schedule run (run.source is schedule) claims its slot (trigger, nominal_time):
        if the slot was claimed before, nothing is inserted and the existing run is named.
        A pending run with keys.debounce set ends, in the same commit, every other pending run of
        its trigger with the same debounce key and reason "debounced" (`skipped`, reason
        "debounced"; Created.superseded counts them): whichever commits last is the burst's run.
        Daemons sharing a store serialize this per (trigger, key) (PostgreSQL: an advisory lock).
        """
        ...

    async def create_runs(self, runs: Sequence[tuple[Run, float]], now: str) -> list[Created]:
        """create_run of many runs (run, dedupe_seconds) in one write: each one's Created, in order.

        All or none are committed (a failure raises StoreError for all). A key or slot named
        twice in the list makes one run, which the later entries name.
        """
        ...

    async def last_slots(self) -> dict[str, str]:
        """The latest claimed nominal time of each trigger's schedule."""
        ...

    async def load_windows(self) -> list[tuple[str, str, str, Any]]:
        """Every saved counting window: (trigger id, group key, fingerprint, counted events)."""
        ...

    async def save_windows(self, windows: list[tuple[str, str, str, Any]]) -> None:
        """Replace these counting windows in one commit; with an empty list of events load_windows
        no longer returns the window (a store may keep its row, see postgres_sources.save_windows)."""
        ...

    async def count_event(
        self, trigger_id: str, group: str, fingerprint: str, entry: dict[str, Any], horizon: str, threshold: int
    ) -> list[dict[str, Any]] | None:
        """Count one event into a counting window (SPEC 3.4, 10) in one commit, under the window
        row's lock, so that daemons sharing the database count together.

        `entry` is {"received_at", "event"}. Entries received at or before `horizon` are dropped,
        a window saved under another fingerprint (a changed trigger) starts afresh, and an entry
        whose event (source and id) the window holds already is not counted again. If the window then holds
        `threshold` entries it is cleared and they are returned (the crossing, which exactly one
        caller sees); otherwise it is saved and None is returned. A crossing is also kept with the
        window, in the same commit, as pending (the outbox) until clear_crossing: its run is made
        by the caller, or after a crash by whichever daemon reads pending_crossings. An event a
        pending crossing holds is not counted again either.
        """
        ...

    async def pending_crossings(self) -> list[tuple[str, str, list[dict[str, Any]]]]:
        """Every crossing count_event kept and clear_crossing has not cleared:
        (trigger id, group key, the counted entries), oldest first within a window."""
        ...

    async def clear_crossing(self, trigger_id: str, group: str, key: str) -> None:
        """Forget the pending crossing named `key` (rows.crossing_key) of this window, if it is there."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    async def list_runs(
        self,
        *,
        trigger_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: str | None = None,
        source: str | None = None,
    ) -> list[Run]:
        """Newest first; `before` is a run id or an RFC 3339 instant to page back from; `source`
        one of runs.Source (webhook, schedule, ...)."""
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

    async def record_steps(self, run_id: str, number: int, steps: Any) -> None:
        """Store the tool calls (SPEC 5.1) attempt `number` has made so far, while it runs, so that the
        API shows them at once and a crash keeps them; a no-op once the attempt is closed."""
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
        steps: Any = None,
    ) -> bool:
        """Close attempt `number` with `status` and its `steps` (tool calls, SPEC 5.1), and move the
        run to `then`; releases the run's claim.

        `then` is PENDING (a retry, due at next_attempt_at) or a final status, which
        also sets finished_at, output, usage, error, reason and the dead-letter mark.
        Returns False, changing nothing, when the attempt was already closed: a daemon
        took the run over after its lease expired, and this outcome comes too late.
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

    async def register_instance(self, instance: Instance) -> None:
        """Record (or record again, after a restart) a daemon sharing the store; last_seen is set to started_at.

        PostgreSQL: INSERT INTO instances (...) VALUES (...) ON CONFLICT (id) DO UPDATE SET ...
        """
        ...

    async def instances(self) -> list[Instance]:
        """Every daemon that registered and was not pruned, by id."""
        ...

    async def expire_claims(self, instance_ids: Sequence[str], at: str) -> int:
        """Make the leases these daemons hold expire at `at` (they are known dead); returns runs affected.

        A daemon starting uses it for its own previous life (same instance id) and for daemons of
        this machine whose process is gone, so that a restart takes their runs over at once
        instead of after the lease. PostgreSQL: UPDATE runs SET lease_until = $at
        WHERE status = 'running' AND claimed_by = ANY($ids).
        """
        ...

    async def claim_runs(
        self, instance: str, now: str, lease_until: str, limit: int, loaded: Loaded, *, count_pending: bool = False
    ) -> Claims:
        """Take over expired leases, then claim up to `limit` due pending runs, oldest first, in one transaction.

        Takeover: every `running` run of a loaded trigger whose lease ended at or before `now`
        (or that has no lease: a run from before claims existed) has its open attempt closed
        `failed`, error "interrupted"; the run becomes pending again (due now) if fewer than the
        trigger's retry.max_attempts attempts failed, else `failed` for good, a dead letter; a run
        another daemon asked to cancel (request_cancel) ends `cancelled` with that reason instead.

        Claim: pending runs due by `now` (next_attempt_at unset or past) whose trigger and agent
        are in `loaded`, oldest first, skipping a run whose trigger or agent is at its
        max_concurrent counted over the running runs of *every* daemon. Each claimed run becomes
        `running`, claimed by `instance` until `lease_until`, with a new attempt started at `now`
        (the attempt is part of the claim: no separate start_attempt). Claims serialize: two
        daemons claiming at once never together exceed a limit (SQLite: BEGIN IMMEDIATE;
        PostgreSQL: an advisory transaction lock, then FOR UPDATE SKIP LOCKED). With
        `count_pending` (the poll asks), Claims.pending counts the pending runs.

        Flow control (SPEC 12, `loaded.flow`): a keyed trigger's max_concurrent is counted per
        keys.concurrency value instead of over the whole trigger; a throttled trigger starts no
        more than `limit` runs (by first start) per `per` seconds per keys.throttle value, and a
        run held back by it gets reason "throttled" and next_attempt_at when the window frees a
        place (so Claims.next_due wakes a daemon then). A claimed run's reason is cleared.
        """
        ...

    async def renew_leases(self, instance: str, run_ids: Sequence[str], now: str, lease_until: str) -> Renewal:
        """Extend to `lease_until` the leases `instance` still holds among `run_ids`; a heartbeat too.

        Sets the instance's last_seen to `now` (even with no runs). A run not in the answer's
        `held` was taken over, or ended: its process must stop. PostgreSQL: UPDATE runs SET
        lease_until = $until WHERE claimed_by = $me AND status = 'running' AND id = ANY($ids)
        RETURNING id, cancel_requested.
        """
        ...

    async def request_cancel(self, run_id: str, reason: str, at: str) -> RunStatus | None:
        """Cancel a run from any daemon; returns the status the run had before, None if there is no such run.

        A pending run is cancelled at once (with `reason`). A running one is flagged: the daemon
        holding it learns it at its next renewal and stops it, recording the reason. A finished
        run is left as it is. PostgreSQL: SELECT status FROM runs WHERE id = $1 FOR UPDATE, then
        one UPDATE as for SQLite.
        """
        ...

    async def trigger_loads(self, trigger_ids: Sequence[str]) -> dict[str, TriggerLoad]:
        """Each trigger's running and pending runs across every daemon (for overlap and max_queued).

        Read for the firings under way, many triggers at once: it must not cost more with a
        longer queue (SQLite keeps the counts in a table maintained by triggers on runs).
        """
        ...

    async def key_load(self, trigger_id: str, concurrency_key: str) -> TriggerLoad:
        """The running and pending runs of one concurrency_key group of a trigger (SPEC 12), for overlap."""
        ...

    async def group_state(self, trigger_id: str, kind: str, key: str, started_since: str) -> GroupState:
        """One flow-control group of a trigger (SPEC 12; `triggerd test`): `kind` is "concurrency",
        "throttle" or "debounce", naming which of a run's keys is `key`."""
        ...

    async def spend(
        self, *, trigger_id: str | None = None, agent_id: str | None = None, day_since: str, hour_since: str
    ) -> Spend:
        """A trigger's (or an agent's) spend: input + output tokens of the usage recorded on its runs
        created after `day_since`, and its runs not skipped created after `hour_since`."""
        ...

    async def pause_trigger(self, trigger_id: str, at: str) -> None:
        """Record the trigger paused (SPEC 12), kept until resume_trigger; pausing again keeps the first time.
        PostgreSQL notifies "paused" so that every daemon learns it at once."""
        ...

    async def resume_trigger(self, trigger_id: str) -> bool:
        """Forget the trigger's pause; False if it was not paused."""
        ...

    async def paused_triggers(self) -> dict[str, str]:
        """Every paused trigger and when it was paused."""
        ...

    async def trigger_stats(self) -> dict[str, TriggerStats]:
        """Per trigger: run counts by status and the newest run."""
        ...

    async def run_summary(self, since: str) -> RunSummary:
        """Runs created since the instant by status, the queue (pending count, oldest) and the
        dead-letter count, from one snapshot of the store."""
        ...

    async def skip_counts(self) -> dict[str, dict[str, int]]:
        """Per trigger: its skipped runs counted by reason (a skip without one counted as "")."""
        ...

    async def prune(self, finished_before: str, now: str) -> int:
        """Delete final runs finished before the instant, expired dedupe keys, and instances not seen
        since the instant; returns runs deleted."""
        ...

    # --- sources (SPEC 5.4) ------------------------------------------------------
    # Plain SQL: a table of seen event ids keyed (source_id, event_id) with an expiry, one of
    # dead messages, one of cursors keyed by source id.

    async def events_seen(self, source_id: str, event_ids: Sequence[str], now: str) -> set[str]:
        """Which of these event ids of the source commit_events recorded with an expiry after `now`
        (one read for a whole delivery)."""
        ...

    async def commit_events(self, events: Sequence[tuple[str, str, str]]) -> None:
        """In one commit: record each (source id, event id, expires_at), replacing an expired
        record of it. (Counting windows are counted apart, by count_event.)"""
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
