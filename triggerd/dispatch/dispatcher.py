"""The dispatcher: turns firings into runs and runs into records.

Each run the dispatcher holds is a Job, either queued (pending, perhaps waiting
for a retry's backoff) or running. Running a job is acquire / execute / record:
the limits are taken before the task starts and given back when it ends; the
attempt itself is an inner task, so that a timeout, a cancel or a shutdown stops
the agent while the outer task stays free to record what happened.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import Enum
from typing import Any

from triggerd.agents import AgentPool
from triggerd.agents.abc import AgentRequest
from triggerd.agents.process_group import end_if_ours
from triggerd.clock import Clock, SystemClock, isoformat, parse_instant
from triggerd.config.models import AnyAgent, Configuration, Overlap, Trigger
from triggerd.dispatch.limits import RunningCounts
from triggerd.dispatch.queue import RunQueue
from triggerd.dispatch.retry import backoff_delay
from triggerd.errors import AgentFailure, Conflict, NotFound, StoreError, Unavailable
from triggerd.masking import mask, mask_value
from triggerd.metrics import METRICS, labelled
from triggerd.runs import (
    CancelReason,
    Firing,
    ProcessGroup,
    Run,
    RunOutcome,
    RunStatus,
    SkipReason,
    Source,
    new_run_id,
)
from triggerd.store.abc import Store

log = logging.getLogger("triggerd.dispatch")
STORE_RETRY_SECONDS = 1.0


class DispatcherState(Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class Submitted:
    """What became of a firing: its run id and status, or the run an idempotency key already named."""

    run_id: str
    trigger_id: str
    status: RunStatus | None
    duplicate: bool = False


@dataclass(eq=False)
class Job:
    """A run this dispatcher holds, with the definitions it runs under (fixed when it was taken)."""

    run_id: str
    trigger: Trigger
    agent: AnyAgent
    input: Mapping[str, Any]
    attempts: int = 0
    failures: int = 0
    not_before: float = 0.0
    task: asyncio.Task[None] | None = None
    attempt_task: asyncio.Task[Any] | None = None
    cancel_reason: str | None = None
    chain_depth: int = 0
    started: float | None = None  # monotonic time of the first attempt's start, for the duration metric
    log_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_extra = {"run_id": self.run_id, "trigger_id": self.trigger.id, "agent_id": self.agent.id}

    @property
    def lane(self) -> str:
        return self.trigger.id

    @property
    def pool(self) -> str:
        return self.agent.id


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: RunStatus
    output: Any = None
    usage: Any = None
    error: str | None = None
    retryable: bool = False


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
        self.pool = pool or AgentPool(self._process_started)
        self.rng = rng or random.Random()
        self.state = DispatcherState.STOPPED
        self.counts = RunningCounts(configuration.settings.limits.max_concurrent_runs)
        self._queue: RunQueue[Job] = RunQueue()
        self._running: dict[str, Job] = {}
        self._reserved: Counter[str] = Counter()
        self._wake: asyncio.TimerHandle | None = None
        self.listener: Callable[[RunOutcome], None] | None = None  # told of every run that ends for good

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> int:
        """Resume what the store says was unfinished (SPEC 5.2), then start dispatching; returns runs resumed.

        Process groups that interrupted command attempts left running are ended first, so that
        no retry runs beside the attempt it repeats.
        """
        resumed = 0
        unfinished = await self.store.unfinished_runs()
        await self._end_interrupted_processes(unfinished)
        for run in unfinished:
            resumed += await self._resume(run)
        self.state = DispatcherState.RUNNING
        self._pump()
        return resumed

    async def drain(self, grace: float) -> None:
        """Stop starting runs, let running ones finish within `grace`, cancel the rest (reason shutdown)."""
        if self.state is DispatcherState.STOPPED and not self._running:
            return
        self.state = DispatcherState.DRAINING
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        tasks = [job.task for job in self._running.values() if job.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for job in list(self._running.values()):
                self._stop_attempt(job, CancelReason.SHUTDOWN)
            if late:
                await asyncio.wait(late)
        self.state = DispatcherState.STOPPED
        await self.pool.close()

    async def reconfigure(self, configuration: Configuration) -> int:
        """Take a new configuration: running runs keep their definitions; queued runs of removed
        triggers are cancelled (reason trigger_removed). Returns how many were cancelled."""
        self.configuration = configuration
        self.counts.global_limit = configuration.settings.limits.max_concurrent_runs
        orphans = [job for job in self._queue if job.trigger.id not in configuration.triggers]
        for job in orphans:
            self._queue.remove(job.run_id)
        for job in orphans:
            await self.store.finish_run(
                job.run_id,
                RunStatus.CANCELLED,
                at=isoformat(self.clock.now()),
                reason=str(CancelReason.TRIGGER_REMOVED),
            )
            log.info("queued run cancelled: its trigger was removed", extra=job.log_extra)
        self._pump()
        return len(orphans)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

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
        """Record a run for the firing (committed before this returns) and queue it.

        With `skip`, the run is recorded `skipped` with that reason and never queued
        (a schedule slot missed during downtime, say).
        """
        if self.state is not DispatcherState.RUNNING:
            raise Unavailable("triggerd is shutting down")
        trigger, agent = self._definitions(firing.trigger_id, firing.agent_id)
        status, reason, victim = (RunStatus.SKIPPED, skip, None) if skip else self._admission(trigger)
        now = isoformat(self.clock.now())
        run = Run(
            id=new_run_id(),
            trigger_id=trigger.id,
            agent_id=agent.id,
            status=status,
            input=dict(firing.input),
            source=firing.source,
            created_at=now,
            reason=reason,
            nominal_time=firing.nominal_time,
            idempotency_key=firing.idempotency_key,
            replay_of=firing.replay_of,
            chain_depth=firing.chain_depth,
            finished_at=now if status.is_final else None,
        )
        self._reserved[trigger.id] += 1
        try:
            created = await self.store.create_run(run, firing.dedupe_seconds, now)
        finally:
            self._reserved[trigger.id] -= 1
        if created.duplicate:
            return Submitted(created.run_id, trigger.id, None, duplicate=True)
        log.info(
            "run created (%s)",
            status,
            extra={
                "run_id": run.id,
                "trigger_id": trigger.id,
                "agent_id": agent.id,
                "source": str(firing.source),
            },
        )
        labelled(METRICS.firings, trigger.id, str(firing.source)).inc()
        if status is RunStatus.SKIPPED:
            METRICS.runs.labels(trigger.id, str(status)).inc()
        if status is RunStatus.PENDING:
            self._enqueue(Job(run.id, trigger, agent, run.input, chain_depth=firing.chain_depth))
            if victim is not None:
                self._stop_attempt(victim, CancelReason.REPLACED)
            self._pump()
        return Submitted(run.id, trigger.id, status)

    def _admission(self, trigger: Trigger) -> tuple[RunStatus, str | None, Job | None]:
        """Pending, or skipped with a reason; for overlap replace, the running job to cancel."""
        running = [job for job in self._running.values() if job.trigger.id == trigger.id]
        queued = self._queue.count(trigger.id)
        in_flight = len(running) + queued + self._reserved[trigger.id]
        if trigger.overlap is Overlap.SKIP and in_flight >= trigger.max_concurrent:
            return RunStatus.SKIPPED, str(SkipReason.OVERLAP), None
        if (
            trigger.overlap is Overlap.QUEUE
            and len(running) >= trigger.max_concurrent
            and queued + self._reserved[trigger.id] >= trigger.max_queued
        ):
            return RunStatus.SKIPPED, str(SkipReason.QUEUE_FULL), None
        if trigger.overlap is Overlap.REPLACE and len(running) >= trigger.max_concurrent:
            return RunStatus.PENDING, None, running[0]
        return RunStatus.PENDING, None, None

    # --- cancel and replay ------------------------------------------------------

    async def cancel(self, run_id: str, reason: CancelReason = CancelReason.REQUESTED) -> Run:
        """Cancel a pending or running run and return it as recorded; Conflict if it has finished."""
        if self._queue.remove(run_id) is not None:
            await self.store.finish_run(run_id, RunStatus.CANCELLED, at=isoformat(self.clock.now()), reason=reason)
        elif run_id in self._running:
            job = self._running[run_id]
            self._stop_attempt(job, reason)
            if job.task is not None:
                await asyncio.shield(job.task)
        else:
            run = await self.store.get_run(run_id)
            if run is None:
                raise NotFound(f"run '{run_id}' does not exist")
            raise Conflict(f"run '{run_id}' is {run.status}; only pending or running runs can be cancelled")
        run = await self.store.get_run(run_id)
        assert run is not None
        return run

    async def replay(self, run_id: str) -> Submitted:
        """A new run with the same input, replay_of set; the original must have finished."""
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"run '{run_id}' does not exist")
        if not run.status.is_final:
            raise Conflict(f"run '{run_id}' is {run.status}; only finished runs can be replayed")
        trigger, _ = self._definitions(run.trigger_id)
        return await self.submit(Firing(trigger.id, trigger.agent.id, run.input, Source.REPLAY, replay_of=run.id))

    def _enqueue(self, job: Job) -> None:
        self._queue.push(job, self.clock.monotonic())

    def _stop_attempt(self, job: Job, reason: str) -> None:
        job.cancel_reason = job.cancel_reason or reason
        if job.attempt_task is not None:
            job.attempt_task.cancel()

    # --- running ----------------------------------------------------------------

    def _pump(self) -> None:
        """Start every queued job the limits allow, oldest first; wake up again for the next backoff."""
        if self.state is not DispatcherState.RUNNING:
            return
        self._queue.start_ready(
            self.clock.monotonic(), check=lambda job: self.counts.verdict(job.trigger, job.agent), start=self._start
        )
        next_due = self._queue.next_due()
        if next_due is not None:
            self._wake_at(next_due)

    def _wake_at(self, due: float) -> None:
        """Pump again at monotonic time `due`, unless a wake-up no later than that is already set."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(due - self.clock.monotonic(), 0.0)
        if self._wake is not None:
            if self._wake.when() <= when:
                return
            self._wake.cancel()
        self._wake = loop.call_at(when, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._pump()

    def _start(self, job: Job) -> None:
        self.counts.add(job.trigger, job.agent)
        self._running[job.run_id] = job
        job.task = asyncio.create_task(self._execute(job), name=f"run-{job.run_id}")
        job.task.add_done_callback(lambda _: self._finished(job))

    def _finished(self, job: Job) -> None:
        self.counts.remove(job.trigger, job.agent)
        self._running.pop(job.run_id, None)
        self._queue.release(job.trigger.id)
        self._pump()

    async def _execute(self, job: Job) -> None:
        number = job.attempts + 1
        try:
            await self.store.start_attempt(job.run_id, number, isoformat(self.clock.now()))
        except StoreError as exc:
            log.error("cannot record the start of an attempt: %s", exc, extra=job.log_extra)
            self._requeue(job, STORE_RETRY_SECONDS)
            return
        job.attempts = number
        if job.started is None:
            job.started = self.clock.monotonic()
        outcome = await self._attempt(job, number)
        while True:
            try:
                await self._record(job, number, outcome)
                return
            except StoreError as exc:
                log.error("cannot record the outcome of attempt %d: %s", number, exc, extra=job.log_extra)
                if self.state is not DispatcherState.RUNNING:
                    return  # the run stays 'running' in the store: the next start resumes it as interrupted
            # A full disk or a lock clears: keep the outcome (and the run's slot) until the store takes it.
            await asyncio.sleep(STORE_RETRY_SECONDS)

    async def _attempt(self, job: Job, number: int) -> _Outcome:
        if job.cancel_reason is not None:
            return _Outcome(RunStatus.CANCELLED, error=job.cancel_reason)
        backend = self.pool.backend(job.agent)
        request = AgentRequest(job.run_id, job.trigger.id, job.agent.id, number, job.input)
        timeout = job.trigger.timeout_seconds
        if job.agent.timeout_seconds is not None:
            timeout = min(timeout, job.agent.timeout_seconds)
        job.attempt_task = asyncio.create_task(backend.run(request), name=f"attempt-{job.run_id}-{number}")
        log.info("attempt %d started", number, extra=job.log_extra)
        try:
            result = await asyncio.wait_for(job.attempt_task, timeout)
        except TimeoutError:
            return _Outcome(RunStatus.TIMED_OUT, error=f"attempt timed out after {timeout:g}s", retryable=True)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task itself is being cancelled, not just the attempt
            return _Outcome(RunStatus.CANCELLED, error=job.cancel_reason or str(CancelReason.REQUESTED))
        except AgentFailure as failure:
            return _Outcome(RunStatus.FAILED, output=failure.output, error=failure.message, retryable=failure.retryable)
        except Exception as exc:  # a backend bug must not take the dispatcher down
            log.exception("agent backend raised", extra=job.log_extra)
            return _Outcome(RunStatus.FAILED, error=f"internal error: {exc.__class__.__name__}", retryable=True)
        finally:
            job.attempt_task = None
        return _Outcome(RunStatus.COMPLETED, output=result.output, usage=result.usage)

    async def _record(self, job: Job, number: int, outcome: _Outcome) -> None:
        """Write the attempt's end and what the run becomes: done, retried later, cancelled or a dead letter.

        The output and error are masked before anything sees them (SPEC 2.3): what is stored, and
        so what the API, the events and the log show, never holds a substituted secret.
        """
        outcome = replace(
            outcome,
            output=mask_value(outcome.output),
            error=None if outcome.error is None else mask(outcome.error),
        )
        then, retry_in = outcome.status, None
        if outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            job.failures += 1
            if outcome.retryable and job.failures < job.trigger.retry.max_attempts:
                then, retry_in = RunStatus.PENDING, backoff_delay(job.trigger.retry, job.failures, self.rng)
        now = self.clock.now()
        await self.store.end_attempt(
            job.run_id,
            number,
            status=outcome.status,
            error=outcome.error,
            at=isoformat(now),
            then=then,
            output=outcome.output,
            usage=outcome.usage,
            reason=outcome.error if then is RunStatus.CANCELLED else None,
            next_attempt_at=isoformat(now + timedelta(seconds=retry_in)) if retry_in is not None else None,
            dead_letter=then in (RunStatus.FAILED, RunStatus.TIMED_OUT),
        )
        extra = {**job.log_extra, "attempt": number, "status": str(then)}
        if then is not RunStatus.PENDING:
            METRICS.runs.labels(job.trigger.id, str(then)).inc()
            if job.started is not None:
                METRICS.run_duration.labels(job.trigger.id).observe(self.clock.monotonic() - job.started)
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
            self._requeue(job, retry_in)
        elif then is RunStatus.COMPLETED:
            log.info("run completed", extra=extra)
        elif then is RunStatus.CANCELLED:
            log.info("run cancelled (%s)", outcome.error, extra=extra)
        else:
            log.error("run %s: %s", then, outcome.error, extra=extra)

    def _requeue(self, job: Job, delay: float) -> None:
        job.not_before = self.clock.monotonic() + delay
        job.task = None
        self._enqueue(job)
        if self.state is DispatcherState.RUNNING:
            self._wake_at(job.not_before)

    # --- resume after a stop or a crash -------------------------------------------

    async def _process_started(self, request: AgentRequest, group: ProcessGroup) -> None:
        """Store a command attempt's process group, so that a start after a crash can end it (SPEC 5.2)."""
        try:
            await self.store.record_process(request.run_id, request.attempt, group)
        except StoreError as exc:
            # The attempt itself can still succeed; only a crash during it would leave the command running.
            log.warning(
                "cannot record the process group of attempt %d: %s",
                request.attempt,
                exc,
                extra={"run_id": request.run_id, "trigger_id": request.trigger_id, "agent_id": request.agent_id},
            )

    async def _end_interrupted_processes(self, runs: list[Run]) -> None:
        """End the process groups interrupted command attempts left running, before any is retried (SPEC 5.2).

        Only a group whose leader is still the recorded process (same pid, start time and boot)
        is signalled: a pid since reused by another process, or one from before a reboot, is not.
        """
        interrupted = [
            (run, attempt.number, attempt.process)
            for run in runs
            for attempt in run.attempts
            if attempt.finished_at is None and attempt.process is not None
        ]
        ended = await asyncio.gather(*(end_if_ours(process) for _, _, process in interrupted))
        for (run, number, process), how in zip(interrupted, ended, strict=True):
            if how is not None:
                log.warning(
                    "process group %d of interrupted attempt %d was still running: %s",
                    process.pgid,
                    number,
                    how,
                    extra={"run_id": run.id, "trigger_id": run.trigger_id, "agent_id": run.agent_id},
                )

    async def _resume(self, run: Run) -> int:
        try:
            trigger, agent = self._definitions(run.trigger_id)
        except NotFound:
            await self.store.finish_run(
                run.id,
                RunStatus.CANCELLED,
                at=isoformat(self.clock.now()),
                reason=str(CancelReason.TRIGGER_REMOVED),
            )
            return 0
        job = Job(
            run.id,
            trigger,
            agent,
            run.input,
            attempts=len(run.attempts),
            failures=run.failures,
            chain_depth=run.chain_depth,
        )
        now = isoformat(self.clock.now())
        if run.status is RunStatus.RUNNING:
            open_attempts = [a for a in run.attempts if a.finished_at is None]
            number = open_attempts[-1].number if open_attempts else len(run.attempts)
            job.failures += 1
            if job.failures >= trigger.retry.max_attempts:
                await self.store.end_attempt(
                    run.id,
                    number,
                    status=RunStatus.FAILED,
                    error="interrupted",
                    at=now,
                    then=RunStatus.FAILED,
                    dead_letter=True,
                )
                return 0
            await self.store.end_attempt(
                run.id, number, status=RunStatus.FAILED, error="interrupted", at=now, then=RunStatus.PENDING
            )
        elif run.status is RunStatus.CANCELLED:
            await self.store.requeue(run.id)
        elif run.next_attempt_at is not None:
            wait = (parse_instant(run.next_attempt_at) - self.clock.now()).total_seconds()
            job.not_before = self.clock.monotonic() + max(wait, 0.0)
        self._enqueue(job)
        log.info("run resumed (was %s)", run.status, extra=job.log_extra)
        return 1
