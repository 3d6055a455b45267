"""The dispatcher: turns firings into runs and runs into records.

The store decides which run starts where (SPEC 10): a firing is stored `pending`, and a
daemon *claims* due pending runs from the store, within the trigger and agent limits counted
over every daemon sharing it and this daemon's own `limits.max_concurrent_runs`. A claim
starts the run's attempt and takes a lease that leases.py renews while it runs. Claims are
looked for when a firing is submitted here, when a run here ends, when a retry falls due, on a
poll (the fallback correctness relies on) and whenever the store notifies (Store.listen:
PostgreSQL's LISTEN/NOTIFY), so that an idle daemon starts another daemon's firing at once.

Each claimed run is a Job. The attempt is an inner task, so that a timeout, a cancel, a
shutdown or a lost lease stops the agent while the outer task stays free to record what
happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from enum import Enum
from functools import partial
from typing import Any

from triggerd.agents import AgentPool
from triggerd.agents.abc import AgentRequest
from triggerd.clock import Clock, SystemClock, isoformat, parse_instant
from triggerd.config.models import AnyAgent, Configuration, Trigger
from triggerd.dispatch.admission import Admission
from triggerd.dispatch.firings import Submitted, create_all, decide_all, new_run, recorded
from triggerd.dispatch.flow import FlowControl, Screened
from triggerd.dispatch.instances import default_instance, loaded, register
from triggerd.dispatch.jobs import Job, Outcome
from triggerd.dispatch.leases import LeaseKeeper
from triggerd.dispatch.orphans import end_interrupted_processes, record_process, record_steps
from triggerd.dispatch.retry import backoff_delay
from triggerd.errors import AgentFailure, Conflict, NotFound, StoreError, Unavailable
from triggerd.masking import mask, mask_value
from triggerd.metrics import METRICS, labelled
from triggerd.runs import (
    CancelReason,
    Firing,
    Run,
    RunOutcome,
    RunStatus,
    Source,
)
from triggerd.store.abc import Store

log = logging.getLogger("triggerd.dispatch")
STORE_RETRY_SECONDS = 1.0
POLL_SECONDS = 1.0  # how often the store is asked for runs nobody woke this daemon for
LEASE_LOST = "lease_lost"  # why a run's attempt was stopped here: another daemon may take it over


class DispatcherState(Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    DRAINING = "draining"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        configuration: Configuration,
        *,
        clock: Clock | None = None,
        pool: AgentPool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.configuration = configuration
        self.clock = clock or SystemClock()
        self.pool = pool or AgentPool(lambda request, group: record_process(self.store, request, group))
        self.rng = rng or random.Random()
        self.state = DispatcherState.STOPPED
        settings = configuration.settings
        self.instance = settings.store.instance or default_instance()
        self.address = str(settings.server.listen)
        self.global_limit = settings.limits.max_concurrent_runs
        self.leases = LeaseKeeper(store, self.instance, settings.store.lease, self.clock, self._lost, self._cancelled)
        self._loaded = (configuration, loaded(configuration))
        self._trigger_ids = set(configuration.triggers)  # as of the last reconfigure (the daemon swaps first)
        self._running: dict[str, Job] = {}
        self.admission = Admission(store, self.clock)
        self.flow = FlowControl(store, self.clock)
        self._pending = 0  # pending runs in the store, as of the last claim
        self._wanted = False
        self._polled = False
        self._claimer: asyncio.Task[None] | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._tender: asyncio.Task[None] | None = None
        self.listener: Callable[[RunOutcome], None] | None = None  # told of every run that ends for good

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> int:
        """Register this daemon, recover what a crash left (SPEC 5.2, 10), start claiming; returns runs resumed.

        Claims of this instance's previous life (the same instance name) and of daemons of this
        machine whose process is gone expire at once: a restart takes their runs over without
        waiting for the lease. Process groups their interrupted command attempts left running
        are ended before any retry starts (claim_runs reports them).
        """
        await register(self.store, self.instance, self.address, self.configuration, self.clock, self.leases.lease)
        unfinished = await self.store.unfinished_runs()
        for run in unfinished:
            if run.status is RunStatus.CANCELLED:  # cancelled by a shutdown: resumed on the next start (SPEC 8)
                await self.store.requeue(run.id)
        await self.flow.refresh()
        self.state = DispatcherState.RUNNING
        await self.store.listen(self._notified)
        await self._claim()
        self._tender = asyncio.create_task(self._tend(), name="dispatch-tend")
        return len(unfinished)

    async def drain(self, grace: float) -> None:
        """Stop claiming runs, let running ones finish within `grace`, cancel the rest (reason shutdown)."""
        if self.state is DispatcherState.STOPPED and not self._running:
            return
        self.state = DispatcherState.DRAINING
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._claimer is not None:  # a claim under way: what it claims is drained like the rest
            await asyncio.gather(self._claimer, return_exceptions=True)
        tasks = [job.task for job in self._running.values() if job.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)  # leases are still renewed meanwhile
            for job in list(self._running.values()):
                self._stop_attempt(job, CancelReason.SHUTDOWN)
            if late:
                await asyncio.wait(late)
        if self._tender is not None:
            self._tender.cancel()
            await asyncio.gather(self._tender, return_exceptions=True)
            self._tender = None
        await self.leases.stop()
        self.state = DispatcherState.STOPPED
        await self.pool.close()

    async def reconfigure(self, configuration: Configuration) -> int:
        """Take a new configuration: running runs keep their definitions; pending runs of triggers this
        reload removed are cancelled (reason trigger_removed). Returns how many were cancelled."""
        removed = self._trigger_ids - set(configuration.triggers)
        self._trigger_ids = set(configuration.triggers)
        self.configuration = configuration
        self.global_limit = configuration.settings.limits.max_concurrent_runs
        cancelled = 0
        for trigger_id in sorted(removed):
            while pending := await self.store.list_runs(trigger_id=trigger_id, status=RunStatus.PENDING, limit=500):
                for run in pending:
                    at = isoformat(self.clock.now())
                    if await self.store.request_cancel(run.id, CancelReason.TRIGGER_REMOVED, at) is RunStatus.PENDING:
                        cancelled += 1
                        log.info(
                            "pending run cancelled: its trigger was removed",
                            extra={"run_id": run.id, "trigger_id": run.trigger_id, "agent_id": run.agent_id},
                        )
        self.wake()
        return cancelled

    @property
    def queue_depth(self) -> int:
        return self._pending

    @property
    def running(self) -> int:
        return len(self._running)

    # --- firing ---------------------------------------------------------------

    def _definitions(self, trigger_id: str, agent_id: str | None = None) -> tuple[Trigger, AnyAgent]:
        trigger = self.configuration.triggers.get(trigger_id)
        if trigger is None:
            raise NotFound(f"trigger '{trigger_id}' is not defined")
        agent = self.configuration.agents.get(agent_id or trigger.agent.id)
        if agent is None:
            raise NotFound(f"agent '{agent_id or trigger.agent.id}' of trigger '{trigger_id}' is not defined")
        return trigger, agent

    async def fire(self, trigger_id: str, input_: Mapping[str, Any] | None = None) -> Submitted:
        """A manual fire (SPEC 7.2): the static input updated with `input_`, any trigger, even disabled."""
        trigger, _ = self._definitions(trigger_id)
        merged = {**trigger.agent.input, **(input_ or {})}
        return await self.submit(Firing(trigger.id, trigger.agent.id, merged, Source.MANUAL))

    async def submit(self, firing: Firing, skip: str | None = None) -> Submitted:
        """Record a run for the firing (committed before this returns) and look for runs to claim.

        With `skip`, the run is recorded `skipped` with that reason and never runs
        (a schedule slot missed during downtime, say).
        """
        (outcome,) = await self.submit_many([(firing, skip)])
        if isinstance(outcome, NotFound):
            raise outcome
        return outcome

    async def submit_many(self, firings: Sequence[tuple[Firing, str | None]]) -> list[Submitted | NotFound]:
        """submit() of many firings at once (a burst of schedule slots), all committed in one write
        before this returns: each one's Submitted, or NotFound for a trigger or agent not defined
        (any more). Their admissions share store reads, and one claim follows them all. Raises
        StoreError (then none is stored) or Unavailable.
        """
        if self.state is not DispatcherState.RUNNING:
            raise Unavailable("triggerd is shutting down")
        outcomes: list[Submitted | NotFound | None] = []
        admitted: list[tuple[int, Firing, Trigger, AnyAgent, Screened]] = []
        for firing, skip in firings:
            try:
                trigger, agent = self._definitions(firing.trigger_id, firing.agent_id)
            except NotFound as exc:
                outcomes.append(exc)
                continue
            screened = await self.flow.screen(trigger, agent, firing, skip)
            self.admission.reserve(trigger.id, screened.keys.concurrency)
            admitted.append((len(outcomes), firing, trigger, agent, screened))
            outcomes.append(None)  # its outcome, once stored
        stored = [False] * len(admitted)
        wake = False
        try:
            decisions = await decide_all(self.admission, [(a[2], a[4]) for a in admitted])
            moment = self.clock.now()
            runs = [
                new_run(firing, trigger, agent, screened, decision, moment)
                for (_, firing, trigger, agent, screened), decision in zip(admitted, decisions, strict=True)
            ]
            created = await create_all(
                self.store,
                [(run, a[1].dedupe_seconds) for run, a in zip(runs, admitted, strict=True)],
                isoformat(moment),
            )
            for n, (run, decision, made) in enumerate(zip(runs, decisions, created, strict=True)):
                at, firing, trigger, _, screened = admitted[n]
                stored[n] = run.status is RunStatus.PENDING and not made.duplicate
                if made.duplicate:
                    outcomes[at] = Submitted(made.run_id, run.trigger_id, None, duplicate=True)
                    continue
                recorded(run, firing.source)
                self.flow.recorded(run, made.superseded, screened.over, self.listener)
                outcomes[at] = Submitted(run.id, run.trigger_id, run.status)
                if run.next_attempt_at is not None and trigger.debounce is not None:
                    self._wake_at(self.clock.monotonic() + trigger.debounce.period)  # the burst's run falls due then
                if run.status is RunStatus.PENDING:
                    if decision.victim is not None:
                        with contextlib.suppress(StoreError):  # the new run is stored: it starts when the old one ends
                            await self._request_cancel(decision.victim, CancelReason.REPLACED)
                    # It may start now. (Else a run of the trigger ending, here or on another daemon,
                    # wakes the daemon it ends on: a claim now would find the trigger full.)
                    wake |= decision.victim is None and decision.may_start
        finally:
            for (_, _, trigger, _, screened), pending in zip(admitted, stored, strict=True):
                self.admission.release(trigger.id, pending, screened.keys.concurrency)
        if wake:
            self.wake()
        return [outcome for outcome in outcomes if outcome is not None]

    # --- cancel and replay ------------------------------------------------------

    async def cancel(self, run_id: str, reason: CancelReason = CancelReason.REQUESTED) -> Run:
        """Cancel a pending or running run, whichever daemon holds it, and return it as recorded;
        Conflict if it has finished.

        A run another daemon runs is flagged in the store; its daemon stops it at its next lease
        renewal, and this waits for that up to one lease.
        """
        before = await self._request_cancel(run_id, reason)
        if before is None:
            raise NotFound(f"run '{run_id}' does not exist")
        if before.is_final:
            raise Conflict(f"run '{run_id}' is {before}; only pending or running runs can be cancelled")
        job = self._running.get(run_id)
        if job is not None and job.task is not None:
            await asyncio.shield(job.task)
        elif before is RunStatus.RUNNING:
            deadline = self.clock.monotonic() + self.leases.lease
            while self.clock.monotonic() < deadline:
                run = await self.store.get_run(run_id)
                if run is not None and run.status.is_final:
                    break
                await asyncio.sleep(0.05)
        run = await self.store.get_run(run_id)
        assert run is not None
        return run

    async def _request_cancel(self, run_id: str, reason: str) -> RunStatus | None:
        """Stop a run held here at once; otherwise record the request in the store (SPEC 10).

        Returns the status the run had before (None: no such run): a pending one is cancelled
        now, a running one flagged for the daemon that holds it, a finished one left alone.
        """
        job = self._running.get(run_id)
        if job is not None:
            self._stop_attempt(job, reason)
            return RunStatus.RUNNING
        before = await self.store.request_cancel(run_id, reason, isoformat(self.clock.now()))
        if before is RunStatus.PENDING:
            log.info("pending run cancelled (%s)", reason, extra={"run_id": run_id})
        job = self._running.get(run_id)  # claimed here while the request was on its way
        if job is not None and before is RunStatus.RUNNING:
            self._stop_attempt(job, reason)
        return before

    async def replay(self, run_id: str) -> Submitted:
        """A new run with the same input, replay_of set; the original must have finished."""
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"run '{run_id}' does not exist")
        if not run.status.is_final:
            raise Conflict(f"run '{run_id}' is {run.status}; only finished runs can be replayed")
        trigger, _ = self._definitions(run.trigger_id)
        return await self.submit(Firing(trigger.id, trigger.agent.id, run.input, Source.REPLAY, replay_of=run.id))

    def _stop_attempt(self, job: Job, reason: str) -> None:
        job.cancel_reason = job.cancel_reason or reason
        if job.attempt_task is not None:
            job.attempt_task.cancel()

    def _lost(self, run_id: str) -> None:
        """The lease keeper could not renew this run's lease in time: stop it, record nothing."""
        job = self._running.get(run_id)
        if job is not None:
            job.lost = True
            self._stop_attempt(job, LEASE_LOST)

    def _cancelled(self, run_id: str, reason: str) -> None:
        """Another daemon asked to cancel a run held here."""
        job = self._running.get(run_id)
        if job is not None:
            self._stop_attempt(job, reason)

    # --- claiming -----------------------------------------------------------------

    def _notified(self, what: str) -> None:
        """A store notification (Store.listen): a cancel asked for a run that may be held here is
        learnt by renewing now; anything else may be a run to claim."""
        if what == "cancel":
            self.leases.renew_now()
        elif what == "paused":
            self.flow.refresh_soon()
        else:
            self.wake()

    def wake(self, *, poll: bool = False) -> None:
        """Look for runs to claim now: a firing, a run that ended, a retry due, a poll, a NOTIFY.

        While every slot of this daemon is taken, only a poll goes to the store (to take expired
        leases over): a firing or a NOTIFY then waits for a run here to end.
        """
        if self.state is not DispatcherState.RUNNING:
            return
        self._wanted = True
        self._polled |= poll
        if self._claimer is None or self._claimer.done():
            self._claimer = asyncio.create_task(self._claim_while_wanted(), name="dispatch-claim")

    async def _claim_while_wanted(self) -> None:
        while self._wanted and self.state is DispatcherState.RUNNING:
            self._wanted = False
            polled, self._polled = self._polled, False
            if polled or len(self._running) < self.global_limit:
                await self._claim(count_pending=polled)

    async def _claim(self, *, count_pending: bool = True) -> None:
        """One claim: take over expired leases, claim what the limits allow, start it."""
        free = self.global_limit - len(self._running)
        configuration, claimed_at = self.configuration, self.clock.monotonic()
        if self._loaded[0] is not configuration:  # a reload swapped it in: claim by the new definitions
            self._loaded = (configuration, loaded(configuration))
        try:
            claims = await self.store.claim_runs(
                self.instance,
                isoformat(self.clock.now()),
                self.leases.lease_until(),
                max(free, 0),
                self._loaded[1],
                count_pending=count_pending,
            )
        except StoreError as exc:
            log.error("cannot claim runs: %s", exc)
            return  # the next poll tries again
        if claims.pending is not None:
            self._pending = claims.pending
        jobs = []
        for run in claims.runs:
            trigger = configuration.triggers[run.trigger_id]
            job = Job(
                run.id,
                trigger,
                configuration.agents[run.agent_id],
                run.input,
                attempt=run.attempts[-1].number,
                failures=run.failures,
                started_at=run.started_at,
                chain_depth=run.chain_depth,
            )
            self._running[job.run_id] = job
            self.leases.add(job.run_id, claimed_at)
            self.admission.started(run.trigger_id)
            jobs.append(job)
        if claims.interrupted:
            await end_interrupted_processes(claims.interrupted)
        for job in jobs:
            log.info("run claimed (attempt %d)", job.attempt, extra=job.log_extra)
            job.task = asyncio.create_task(self._execute(job), name=f"run-{job.run_id}")
            job.task.add_done_callback(partial(self._finished, job))
        if claims.next_due is not None:
            wait = (parse_instant(claims.next_due) - self.clock.now()).total_seconds()
            self._wake_at(self.clock.monotonic() + max(wait, 0.0))
        if jobs and len(jobs) == free:
            self._wanted = True  # every free slot was filled: more may be due once one frees

    async def _tend(self) -> None:
        """Renew leases (leases.py) and poll the store for runs nobody woke this daemon for."""
        next_poll = 0.0
        while True:
            self.leases.tick()
            now = self.clock.monotonic()
            if now >= next_poll:
                next_poll = now + POLL_SECONDS
                self.wake(poll=True)
                self.flow.refresh_soon()  # a pause another daemon stored, if no notification told
            await asyncio.sleep(min(self.leases.every / 3, POLL_SECONDS))

    def _wake_at(self, due: float) -> None:
        """Wake up at monotonic time `due`, unless a wake-up no later than that is already set."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(due - self.clock.monotonic(), 0.0)
        if self._wake is not None:
            if self._wake.when() <= when:
                return
            self._wake.cancel()
        self._wake = loop.call_at(when, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self.wake()

    # --- running ----------------------------------------------------------------

    def _finished(self, job: Job, _: object = None) -> None:
        self._running.pop(job.run_id, None)
        if job.ending:
            self.admission.ended(job.trigger.id, job.ending, final=job.ended)
        else:
            self.admission.forget(job.trigger.id)
        self.leases.remove(job.run_id)
        self.wake()

    async def _execute(self, job: Job) -> None:
        outcome = await self._attempt(job, job.attempt)
        job.ending = self.admission.ending(job.trigger.id)
        while not job.lost:
            try:
                await self._record(job, job.attempt, outcome)
                return
            except StoreError as exc:
                log.error("cannot record the outcome of attempt %d: %s", job.attempt, exc, extra=job.log_extra)
                if self.state is not DispatcherState.RUNNING:
                    return  # the run stays 'running' in the store: its lease expires and it is taken over
            # A full disk or a lock clears: keep the outcome (and the run's slot) until the store takes it.
            await asyncio.sleep(STORE_RETRY_SECONDS)
        log.warning("attempt %d stopped: its lease was lost", job.attempt, extra=job.log_extra)

    async def _attempt(self, job: Job, number: int) -> Outcome:
        if job.cancel_reason is not None:
            return Outcome(RunStatus.CANCELLED, error=job.cancel_reason)
        request = AgentRequest(job.run_id, job.trigger.id, job.agent.id, number, job.input)
        request.transcript.keep = partial(record_steps, self.store, request)
        outcome = await self._run_agent(job, request)
        # Kept whatever the outcome: the tool calls made and the tokens spent before a failure,
        # a timeout or a cancel are part of the record (SPEC 5.1).
        transcript = request.transcript
        return replace(outcome, usage=outcome.usage or transcript.usage, steps=transcript.steps or None)

    async def _run_agent(self, job: Job, request: AgentRequest) -> Outcome:
        backend = self.pool.backend(job.agent)
        timeout = job.trigger.timeout_seconds
        if job.agent.timeout_seconds is not None:
            timeout = min(timeout, job.agent.timeout_seconds)
        job.attempt_task = asyncio.create_task(backend.run(request), name=f"attempt-{job.run_id}-{request.attempt}")
        log.info("attempt %d started", request.attempt, extra=job.log_extra)
        try:
            result = await asyncio.wait_for(job.attempt_task, timeout)
        except TimeoutError:
            return Outcome(RunStatus.TIMED_OUT, error=f"attempt timed out after {timeout:g}s", retryable=True)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task itself is being cancelled, not just the attempt
            return Outcome(RunStatus.CANCELLED, error=job.cancel_reason or str(CancelReason.REQUESTED))
        except AgentFailure as failure:
            return Outcome(
                RunStatus.FAILED,
                output=failure.output,
                error=failure.message,
                retryable=failure.retryable,
                reason=failure.reason,
            )
        except Exception as exc:  # a backend bug must not take the dispatcher down
            log.exception("agent backend raised", extra=job.log_extra)
            return Outcome(RunStatus.FAILED, error=f"internal error: {exc.__class__.__name__}", retryable=True)
        finally:
            job.attempt_task = None
        return Outcome(RunStatus.COMPLETED, output=result.output, usage=result.usage)

    async def _record(self, job: Job, number: int, outcome: Outcome) -> None:
        """Write the attempt's end and what the run becomes: done, retried later, cancelled or a dead letter.

        The output and error are masked before anything sees them (SPEC 2.3): what is stored, and
        so what the API, the events and the log show, never holds a substituted secret.
        """
        outcome = replace(
            outcome,
            output=mask_value(outcome.output),
            error=None if outcome.error is None else mask(outcome.error),
            steps=mask_value(outcome.steps),
        )
        then, retry_in = outcome.status, None
        if outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            job.failures += 1
            if outcome.retryable and job.failures < job.trigger.retry.max_attempts:
                then, retry_in = RunStatus.PENDING, backoff_delay(job.trigger.retry, job.failures, self.rng)
        now = self.clock.now()
        recorded = await self.store.end_attempt(
            job.run_id,
            number,
            status=outcome.status,
            error=outcome.error,
            at=isoformat(now),
            then=then,
            output=outcome.output,
            usage=outcome.usage,
            steps=outcome.steps,
            reason=outcome.error if then is RunStatus.CANCELLED else outcome.reason,
            next_attempt_at=isoformat(now + timedelta(seconds=retry_in)) if retry_in is not None else None,
            dead_letter=then in (RunStatus.FAILED, RunStatus.TIMED_OUT),
        )
        if not recorded:
            log.warning("attempt %d ended after another daemon took the run over", number, extra=job.log_extra)
            return
        job.ended = then is not RunStatus.PENDING
        extra = {**job.log_extra, "attempt": number, "status": str(then)}
        if then is not RunStatus.PENDING:
            labelled(METRICS.runs, job.trigger.id, str(then)).inc()
            if job.started_at is not None:
                elapsed = (now - parse_instant(job.started_at)).total_seconds()
                labelled(METRICS.run_duration, job.trigger.id).observe(max(elapsed, 0.0))
        if then in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT) and self.listener is not None:
            self.listener(
                RunOutcome(
                    job.run_id,
                    job.trigger.id,
                    job.agent.id,
                    then,
                    number,
                    job.chain_depth,
                    outcome.output,
                    outcome.error,
                    retries_exhausted=then is not RunStatus.COMPLETED
                    and job.trigger.retry.max_attempts > 1
                    and job.failures >= job.trigger.retry.max_attempts,
                )
            )
        if retry_in is not None:
            log.warning(
                "attempt %d %s: %s; retry in %.1fs", number, outcome.status, outcome.error, retry_in, extra=extra
            )
            self._wake_at(self.clock.monotonic() + retry_in)  # any daemon may claim the retry
        elif then is RunStatus.COMPLETED:
            log.info("run completed", extra=extra)
        elif then is RunStatus.CANCELLED:
            log.info("run cancelled (%s)", outcome.error, extra=extra)
        else:
            log.error("run %s: %s", then, outcome.error, extra=extra)
