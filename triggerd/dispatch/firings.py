"""A firing made a run: the run to store, and what is told of it once stored (log line, metrics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from triggerd.config.models import AnyAgent, Trigger
from triggerd.dispatch.admission import Admission, Decision
from triggerd.metrics import METRICS, labelled
from triggerd.runs import Firing, Run, RunStatus, Source, new_run_id
from triggerd.store.abc import Created, Store

log = logging.getLogger("triggerd.dispatch")


def new_run(firing: Firing, trigger: Trigger, agent: AnyAgent, decision: Decision, now: str) -> Run:
    """The run a firing becomes under its admission decision, created at `now`."""
    status = decision.status
    return Run(
        id=new_run_id(),
        trigger_id=trigger.id,
        agent_id=agent.id,
        status=status,
        input=dict(firing.input),
        source=firing.source,
        created_at=now,
        reason=decision.reason,
        nominal_time=firing.nominal_time,
        idempotency_key=firing.idempotency_key,
        replay_of=firing.replay_of,
        chain_depth=firing.chain_depth,
        finished_at=now if status.is_final else None,
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


async def decide_all(admission: Admission, wanted: Sequence[tuple[Trigger, str | None]]) -> list[Decision]:
    """Each firing's admission (a skip given is final); the reads of a batch are shared (admission.py)."""
    if len(wanted) == 1:  # the path of every webhook
        trigger, skip = wanted[0]
        return [Decision(RunStatus.SKIPPED, skip) if skip else await admission.decide(trigger)]
    decided = await admission.decide_many([t for t, skip in wanted if not skip])
    given = iter(decided)
    return [Decision(RunStatus.SKIPPED, skip) if skip else next(given) for _, skip in wanted]


async def create_all(store: Store, runs: Sequence[tuple[Run, float]], now: str) -> list[Created]:
    """Store new runs: one firing alone shares the store's group commit with concurrent ones, a
    batch is one write."""
    if len(runs) == 1:
        return [await store.create_run(runs[0][0], runs[0][1], now)]
    return await store.create_runs(runs, now)
