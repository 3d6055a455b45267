"""Flow control in the store (SPEC 12), shared by both stores: what a claim admits, and the SQL
of a debounce's supersede and of a budget's spend, with each driver's placeholder.

The claim's decisions are taken here over counts each store reads inside its claim
transaction, so that they hold across every daemon sharing the store, as max_concurrent does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import timedelta

from triggerd.clock import isoformat, parse_instant
from triggerd.runs import RunStatus
from triggerd.store.abc import Loaded
from triggerd.store.rows import NewRun

RUNNING_BY_KEY = (
    "SELECT trigger_id, concurrency_key, count(*) FROM runs WHERE status = 'running' "
    "AND concurrency_key IS NOT NULL GROUP BY trigger_id, concurrency_key"
)


def starts_query(mark: str, triggers: int) -> str:
    """First starts of throttled triggers' runs since an instant: (trigger, throttle key, started_at)."""
    return (
        "SELECT trigger_id, throttle_key, started_at FROM runs WHERE started_at > "
        f"{mark} AND trigger_id IN ({', '.join([mark] * triggers)})"
    )


def supersede(mark: str) -> str:
    """End the other pending runs of a debounce burst (parameters: at, trigger, key, the new run's id)."""
    return (
        f"UPDATE runs SET status = 'skipped', reason = 'debounced', finished_at = {mark}, next_attempt_at = NULL "
        f"WHERE trigger_id = {mark} AND debounce_key = {mark} AND status = 'pending' AND reason = 'debounced' "
        f"AND id <> {mark}"
    )


def burst_heads(fresh: Sequence[NewRun]) -> list[NewRun]:
    """Of a batch's new pending debounced runs, the last of each (trigger, debounce key), in sorted
    order: its supersede ends the rest of its burst, the batch's own earlier runs included."""
    last: dict[tuple[str, str], NewRun] = {}
    for op in fresh:
        if op.run.keys.debounce is not None and op.run.status is RunStatus.PENDING:
            last[(op.run.trigger_id, op.run.keys.debounce)] = op
    return [last[group] for group in sorted(last)]


def spend_query(column: str, tokens: str, mark: str) -> str:
    """A trigger's or agent's spend (parameters: id, day_since, id, hour_since); `tokens` is the
    dialect's expression for a run's input + output tokens from its usage."""
    return (
        f"SELECT (SELECT COALESCE(sum({tokens}), 0) FROM runs WHERE {column} = {mark} AND created_at > {mark} "
        f"AND usage IS NOT NULL), (SELECT count(*) FROM runs WHERE {column} = {mark} AND created_at > {mark} "
        "AND status <> 'skipped')"
    )


def key_load_query(mark: str) -> str:
    """Running and pending runs of one concurrency group, and its oldest running (parameters: trigger, key)."""
    return (
        "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending'), "
        f"min(id) FILTER (WHERE status = 'running') FROM runs WHERE trigger_id = {mark} "
        f"AND concurrency_key = {mark} AND status IN ('pending', 'running')"
    )


GROUP_COLUMNS = {"concurrency": "concurrency_key", "throttle": "throttle_key", "debounce": "debounce_key"}


def group_queries(kind: str, mark: str) -> tuple[str, str]:
    """A group's runs in flight (parameters: trigger, key, trigger, key) and its first starts since
    an instant (parameters: trigger, key, since). Each status is counted apart, and each count
    names both statuses too, so that SQLite may search the partial index a term of it matches
    (runs_running, runs_debounce, runs_concurrency) rather than every run of the trigger."""
    column = GROUP_COLUMNS[kind]  # a fixed name, never the caller's text
    where = f"trigger_id = {mark} AND {column} = {mark}"
    flight = f"{where} AND status IN ('pending', 'running')"
    return (
        f"SELECT (SELECT count(*) FROM runs WHERE {flight} AND status = 'running'), p.n, p.due FROM "
        f"(SELECT count(*) AS n, min(next_attempt_at) AS due FROM runs WHERE {flight} AND status = 'pending') AS p",
        f"SELECT started_at FROM runs WHERE {where} AND started_at > {mark} ORDER BY started_at",
    )


class Gate:
    """A claim's flow-control admission: per-key max_concurrent and throttle windows, counted
    over every daemon's runs (read in the claim transaction) and updated as this claim admits."""

    def __init__(self, loaded: Loaded, now: str) -> None:
        self.loaded = loaded
        self.now = now
        self._at = parse_instant(now)
        self.running: Counter[tuple[str, str]] = Counter()  # (trigger, concurrency key) -> running runs
        self.starts: dict[tuple[str, str], list[str]] = {}  # (trigger, throttle key) -> first starts in window
        self.throttled: list[tuple[str, str]] = []  # (run id, when its window frees a place)

    @property
    def throttled_triggers(self) -> list[str]:
        return [t for t, f in self.loaded.flow.items() if f.throttle is not None]

    def since(self) -> str:
        """The oldest instant any throttled trigger's window reaches back to."""
        widest = max((f.throttle[1] for f in self.loaded.flow.values() if f.throttle is not None), default=0.0)
        return isoformat(self._at - timedelta(seconds=widest))

    def count_running(self, rows: Iterable[tuple[str, str, int]]) -> None:
        for trigger_id, key, count in rows:
            self.running[(trigger_id, key)] += count

    def count_starts(self, rows: Iterable[tuple[str, str | None, str]]) -> None:
        for trigger_id, key, started_at in rows:
            flow = self.loaded.flow.get(trigger_id)
            if flow is None or flow.throttle is None:
                continue
            if started_at > isoformat(self._at - timedelta(seconds=flow.throttle[1])):
                self.starts.setdefault((trigger_id, key or ""), []).append(started_at)

    def keyed(self, trigger_id: str) -> bool:
        flow = self.loaded.flow.get(trigger_id)
        return flow is not None and flow.keyed

    def admit(self, run_id: str, trigger_id: str, concurrency_key: str | None, throttle_key: str | None) -> bool:
        """Whether the run may start now by its flow control; counts it if so. A run the throttle
        holds back is noted in `throttled`, to be marked so by the store."""
        flow = self.loaded.flow.get(trigger_id)
        if flow is None:
            return True
        group = (trigger_id, concurrency_key or "")
        if flow.keyed and self.running[group] >= self.loaded.triggers[trigger_id][0]:
            return False
        window = (trigger_id, throttle_key or "")
        if flow.throttle is not None:
            limit, per = flow.throttle
            starts = sorted(self.starts.get(window, []))
            if len(starts) >= limit:
                frees = parse_instant(starts[len(starts) - limit]) + timedelta(seconds=per)
                self.throttled.append((run_id, isoformat(frees)))
                return False
            self.starts.setdefault(window, []).append(self.now)
        if flow.keyed:
            self.running[group] += 1
        return True
