"""What every store shares: a run as a table row and back, and how a batch of new runs is decided.

The stores differ in how they talk to their database, not in what a row holds or in which of
a batch's firings become runs: both keep the columns below (text timestamps that sort as they
compare, JSON as text) and both decide a batch with `decide`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import orjson

from triggerd.clock import isoformat, parse_instant
from triggerd.runs import Attempt, FlowKeys, ProcessGroup, Run, RunStatus, Source
from triggerd.store.abc import Created, Instance, RunSummary

RUN_COLUMNS = (
    "id, trigger_id, agent_id, status, reason, input, output, error, usage, source, nominal_time, "
    "idempotency_key, replay_of, chain_depth, dead_letter, next_attempt_at, created_at, started_at, finished_at, "
    "concurrency_key, throttle_key, debounce_key"
)
ATTEMPT_COLUMNS = "run_id, number, started_at, finished_at, status, error, pgid, pgid_start_ticks, boot_id, steps"
INSTANCE_COLUMNS = "id, address, started_at, fingerprint, last_seen, pid, pid_start_ticks, boot_id"
UNFINISHED = "status IN ('pending', 'running') OR (status = 'cancelled' AND reason = 'shutdown')"


def dumps(value: Any) -> str | None:
    """JSON text as json.dumps writes it compactly, by orjson when that gives the same value back.

    orjson (a tenth of the time, on the writer thread, which then holds the GIL less) writes NaN
    and infinities as null and refuses integers past 64 bits and keys that are not strings:
    a text with a null in it, or a refusal, is written again by json.dumps."""
    if value is None:
        return None
    try:
        text = orjson.dumps(value)
    except TypeError:
        text = b"null"
    if b"null" in text:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.decode()


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def is_instant(before: str) -> bool:
    """Whether list_runs' `before` is an RFC 3339 instant (else a run id)."""
    return "T" in before and ":" in before


class NewRun:
    """A create_run waiting for its batch: the run, and the key and slot it would claim."""

    __slots__ = ("dedupe_seconds", "key", "now", "run", "slot")

    def __init__(self, run: Run, dedupe_seconds: float, now: str) -> None:
        self.run = run
        self.now = now
        self.dedupe_seconds = dedupe_seconds
        self.key = run.idempotency_key if dedupe_seconds > 0 else None
        self.slot = run.nominal_time if run.source is Source.SCHEDULE else None

    def expires_at(self) -> str:
        """When the idempotency key stops naming this run."""
        return isoformat(parse_instant(self.now) + timedelta(seconds=self.dedupe_seconds))

    def row(self) -> tuple[Any, ...]:
        """The run's values in RUN_COLUMNS order (dead_letter as a bool; SQLite stores it as 0/1)."""
        run = self.run
        return (
            run.id,
            run.trigger_id,
            run.agent_id,
            str(run.status),
            run.reason,
            dumps(run.input),
            dumps(run.output),
            run.error,
            dumps(run.usage),
            str(run.source),
            run.nominal_time,
            run.idempotency_key,
            run.replay_of,
            run.chain_depth,
            run.dead_letter,
            run.next_attempt_at,
            run.created_at,
            run.started_at,
            run.finished_at,
            run.keys.concurrency,
            run.keys.throttle,
            run.keys.debounce,
        )


def decide(
    new: Sequence[NewRun],
    keys: Mapping[tuple[str, str], tuple[str, str]],
    slots: Mapping[tuple[str, str], str],
) -> tuple[list[Created], list[NewRun]]:
    """Which new runs to insert: (each one's outcome, the runs to insert), in batch order.

    `keys` maps (trigger, key) to the stored (run id, expires at), `slots` maps (trigger,
    nominal time) to the stored run id. A run whose key is unexpired at its `now`, or whose
    slot is claimed, names the stored run; a key or slot claimed earlier in the same batch
    counts too, so a batch never holds two runs for one key or slot.
    """
    keys, slots = dict(keys), dict(slots)
    created: list[Created] = []
    fresh: list[NewRun] = []
    for op in new:
        run = op.run
        if op.key is not None:
            seen = keys.get((run.trigger_id, op.key))
            if seen is not None and seen[1] > op.now:
                created.append(Created(seen[0], duplicate=True))
                continue
        if op.slot is not None:
            claimed = slots.get((run.trigger_id, op.slot))
            if claimed is not None:
                created.append(Created(claimed, duplicate=True))
                continue
            slots[(run.trigger_id, op.slot)] = run.id
        if op.key is not None:
            keys[(run.trigger_id, op.key)] = (run.id, "\uffff")  # claimed just now: unexpired
        fresh.append(op)
        created.append(Created(run.id))
    return created, fresh


def attempts_by_run(rows: Iterable[Sequence[Any]]) -> dict[str, list[Attempt]]:
    """Rows of ATTEMPT_COLUMNS, ordered by run and number, as each run's attempts."""
    attempts: dict[str, list[Attempt]] = {}
    for run_id, number, started, finished, status, error, pgid, ticks, boot, steps in rows:
        process = ProcessGroup(pgid, ticks, boot) if pgid is not None else None
        attempt = Attempt(number, started, finished, RunStatus(status), error, process, tuple(loads(steps) or ()))
        attempts.setdefault(run_id, []).append(attempt)
    return attempts


def run_from_row(r: Sequence[Any], attempts: Mapping[str, Sequence[Attempt]]) -> Run:
    """A row of RUN_COLUMNS as a Run, with its attempts."""
    return Run(
        id=r[0],
        trigger_id=r[1],
        agent_id=r[2],
        status=RunStatus(r[3]),
        reason=r[4],
        input=loads(r[5]),
        output=loads(r[6]),
        error=r[7],
        usage=loads(r[8]),
        source=Source(r[9]),
        nominal_time=r[10],
        idempotency_key=r[11],
        replay_of=r[12],
        chain_depth=r[13],
        dead_letter=bool(r[14]),
        next_attempt_at=r[15],
        created_at=r[16],
        started_at=r[17],
        finished_at=r[18],
        keys=FlowKeys(r[19], r[20], r[21]),
        attempts=tuple(attempts.get(r[0], ())),
    )


def count_into(
    stored: list[dict[str, Any]],
    entry: dict[str, Any],
    horizon: str,
    threshold: int,
    fired: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """One event counted into a window (SPEC 3.4), as both stores' count_event decide it under
    the window row's lock: (the window to store, the counted entries if this one reached the
    threshold, else None). Entries received at or before `horizon` have left the window; an
    entry whose event (source and id, as CloudEvents identify one) the window already holds, or
    one of the window's crossings (`fired`, see record_crossing) holds, is a retry or a
    redelivery and counts nothing.
    """
    window = [w for w in stored if parse_instant(w["received_at"]) > parse_instant(horizon)]
    held = [*window, *(w for crossing in fired for w in crossing["entries"])]
    if any(_identity(w["event"]) == _identity(entry["event"]) for w in held):
        return window, None
    window.append(entry)
    if len(window) >= threshold:
        return [], window
    return window, None


def _identity(event: dict[str, Any]) -> tuple[Any, Any]:
    return event.get("source"), event.get("id")


def forget_cleared(fired: list[dict[str, Any]], horizon: str) -> list[dict[str, Any]]:
    """A window's crossings (its `fired` column) without the cleared ones whose event has left
    the window (received at or before `horizon`).

    A cleared crossing keeps its completing event (and no more) until then, so that a broker's
    redelivery of that event, which a crash kept from being recorded as seen, is not counted
    into the next window after the crossing's run was made.
    """
    gone = parse_instant(horizon)
    return [c for c in fired if not c["cleared"] or parse_instant(c["entries"][-1]["received_at"]) > gone]


def record_crossing(fired: list[dict[str, Any]], counted: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A window's crossings after a count: a new crossing, if any, added as pending (the outbox
    SPEC 9 asks of an accepted firing). None when there are none."""
    kept = [*fired, {"entries": counted, "cleared": False}] if counted is not None else fired
    return kept or None


def clear_crossing(fired: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """A window's crossings with the one named `key` cleared (its run is made)."""
    return [{"entries": c["entries"][-1:], "cleared": True} if crossing_key(c["entries"]) == key else c for c in fired]


def pending(fired: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The counted entries of a window's crossings not yet cleared, oldest first."""
    return [c["entries"] for c in fired if not c["cleared"]]


def crossing_key(counted: Sequence[Mapping[str, Any]]) -> str:
    """A crossing's name: the source, id and receipt time of the event that completed it (the last
    counted). A window never counts one event twice at once, and the time keeps a crossing that
    an id a sender reused completes later from being taken for this one."""
    last = counted[-1]
    source, event_id = _identity(last["event"])
    return f"{source}/{event_id}@{last['received_at']}"


def listing_query(
    trigger_id: str | None, status: Any, limit: int, before: str | None, mark: str, source: str | None = None
) -> tuple[str, list[Any]]:
    """The WHERE/ORDER/LIMIT tail and parameters of Store.list_runs, with the driver's placeholder
    `mark` ("?" for sqlite3, "%s" for psycopg): newest first, `before` a run id or an instant."""
    clauses, params = [], []
    if trigger_id is not None:
        clauses.append(f"trigger_id = {mark}")
        params.append(trigger_id)
    if status is not None:
        clauses.append(f"status = {mark}")
        params.append(str(status))
    if source is not None:
        clauses.append(f"source = {mark}")
        params.append(source)
    if before is not None:
        clauses.append(f"created_at < {mark}" if is_instant(before) else f"id < {mark}")
        params.append(before)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return f"{where} ORDER BY id DESC LIMIT {mark}", [*params, limit]


def summary_query(mark: str, dead_letter: str) -> str:
    """Store.run_summary as one statement (one snapshot in either database); `dead_letter` is the
    driver's test of the mark ("dead_letter = 1" for SQLite, "dead_letter" for PostgreSQL)."""
    return (
        f"SELECT 'status', status, count(*), NULL FROM runs WHERE created_at >= {mark} GROUP BY status "
        "UNION ALL SELECT 'pending', NULL, count(*), min(created_at) FROM runs WHERE status = 'pending' "
        f"UNION ALL SELECT 'dead', NULL, count(*), NULL FROM runs WHERE {dead_letter}"
    )


SKIP_COUNTS = "SELECT trigger_id, COALESCE(reason, ''), count(*) FROM runs WHERE status = 'skipped' GROUP BY 1, 2"


def fold_summary(rows: Iterable[Sequence[Any]]) -> RunSummary:
    by_status: dict[str, int] = {}
    pending, oldest, dead = 0, None, 0
    for kind, status, count, first in rows:
        if kind == "status":
            by_status[status] = int(count)
        elif kind == "pending":
            pending, oldest = int(count), first
        else:
            dead = int(count)
    return RunSummary(by_status, pending, oldest, dead)


def fold_skips(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    skips: dict[str, dict[str, int]] = {}
    for trigger_id, reason, count in rows:
        skips.setdefault(trigger_id, {})[reason] = int(count)
    return skips


def instance_row(instance: Instance) -> tuple[Any, ...]:
    """A daemon registering itself (Store.register_instance): INSTANCE_COLUMNS, last seen at its start."""
    process = instance.process
    return (
        instance.id,
        instance.address,
        instance.started_at,
        instance.fingerprint,
        instance.started_at,
        process.pgid if process else None,
        process.start_ticks if process else None,
        process.boot_id if process else None,
    )


def instance_from_row(row: Sequence[Any]) -> Instance:
    i, a, s, f, seen, pid, ticks, boot = row
    return Instance(i, a, s, f, seen, ProcessGroup(pid, ticks, boot) if pid is not None else None)
