"""A firing made a run: the run to store, what is told of it once stored (log line, metrics), and
what the firing's sender is answered (Submitted)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from triggerd.clock import isoformat
from triggerd.config.models import AnyAgent, Trigger
from triggerd.dispatch.admission import Admission, Decision
from triggerd.dispatch.flow import Screened, wait_for_debounce
from triggerd.metrics import METRICS, labelled
from triggerd.runs import Firing, Run, RunStatus, Source, new_run_id
from triggerd.store.abc import Created, Store

log = logging.getLogger("triggerd.dispatch")


@dataclass(frozen=True, slots=True)
class Submitted:
    """What became of a firing: its run id and status, or the run an idempotency key already named."""

    run_id: str
    trigger_id: str
    status: RunStatus | None
    duplicate: bool = False


def new_run(
    firing: Firing, trigger: Trigger, agent: AnyAgent, screened: Screened, decision: Decision, moment: datetime
) -> Run:
    """The run a firing becomes under flow control and its admission decision, created at `moment`
    (a debounced one waits `period` from then, SPEC 12)."""
    status, now = decision.status, isoformat(moment)
    waiting, due = wait_for_debounce(trigger, status, moment)
    return Run(
        id=new_run_id(),
        trigger_id=trigger.id,
        agent_id=agent.id,
        status=status,
        input=dict(firing.input),
        source=firing.source,
        created_at=now,
        reason=waiting or decision.reason,
        error=screened.over.message if screened.over is not None else None,
        nominal_time=firing.nominal_time,
        idempotency_key=firing.idempotency_key,
        replay_of=firing.replay_of,
        chain_depth=firing.chain_depth,
        finished_at=now if status.is_final else None,
        next_attempt_at=due,
        keys=screened.keys,
    )


def recorded(run: Run, source: Source) -> None:
    """A new run is committed: its log line and counters."""
    log.info(
        "run created (%s)",
        run.status,
        extra={"run_id": run.id, "trigger_id": run.trigger_id, "agent_id": run.agent_id, "source": str(source)},
    )
    labelled(METRICS.firings, run.trigger_id, str(source)).inc()
    if run.status is RunStatus.SKIPPED:
        METRICS.runs.labels(run.trigger_id, str(run.status)).inc()


async def decide_all(admission: Admission, wanted: Sequence[tuple[Trigger, Screened]]) -> list[Decision]:
    """Each firing's admission (a skip flow control or the caller gave is final); the reads of a
    batch's ungrouped firings are shared (admission.py), a grouped one is decided alone."""
    if len(wanted) == 1:  # the path of every webhook: its read is shared with concurrent requests'
        trigger, screened = wanted[0]
        if screened.skip:
            return [Decision(RunStatus.SKIPPED, screened.skip)]
        return [await admission.decide(trigger, screened.keys.concurrency, screened.keys.debounce)]
    decided = iter(await admission.decide_many([t for t, s in wanted if not s.skip and not _grouped(t, s)]))
    return [
        Decision(RunStatus.SKIPPED, s.skip)
        if s.skip
        else await admission.decide(t, s.keys.concurrency, s.keys.debounce)
        if _grouped(t, s)
        else next(decided)
        for t, s in wanted
    ]


def _grouped(trigger: Trigger, screened: Screened) -> bool:
    """Whether admission decides the firing by its concurrency or debounce group (SPEC 12)."""
    return trigger.debounce is not None or screened.keys.concurrency is not None


async def create_all(store: Store, runs: Sequence[tuple[Run, float]], now: str) -> list[Created]:
    """Store new runs: one firing alone shares the store's group commit with concurrent ones, a
    batch is one write."""
    if len(runs) == 1:
        return [await store.create_run(runs[0][0], runs[0][1], now)]
    return await store.create_runs(runs, now)
