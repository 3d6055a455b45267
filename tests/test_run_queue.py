"""The dispatcher's queue: FIFO per trigger, turns, parking by limit, lazy removal, backoffs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from triggerd.dispatch.queue import RunQueue, Verdict


@dataclass
class J:
    run_id: str
    trigger: str
    agent: str = "agent"
    not_before: float = 0.0

    @property
    def lane(self) -> str:
        return self.trigger

    @property
    def pool(self) -> str:
        return self.agent


@dataclass
class Limits:
    """A small stand-in for the dispatcher's counts: global, per-agent and per-trigger caps."""

    total: int = 100
    per_agent: dict[str, int] = field(default_factory=dict)
    per_trigger: int = 100
    running: list[J] = field(default_factory=list)
    checks: int = 0

    def check(self, job: J) -> Verdict:
        self.checks += 1
        if len(self.running) >= self.total:
            return Verdict.GLOBAL_FULL
        agents = Counter(j.agent for j in self.running)
        if job.agent in self.per_agent and agents[job.agent] >= self.per_agent[job.agent]:
            return Verdict.AGENT_FULL
        if sum(j.trigger == job.trigger for j in self.running) >= self.per_trigger:
            return Verdict.TRIGGER_FULL
        return Verdict.START

    def pump(self, queue: RunQueue[J], now: float = 0.0) -> list[str]:
        before = len(self.running)
        queue.start_ready(now, self.check, self.running.append)
        return [j.run_id for j in self.running[before:]]

    def finish(self, queue: RunQueue[J], run_id: str) -> None:
        job = next(j for j in self.running if j.run_id == run_id)
        self.running.remove(job)
        queue.release(job.lane)


def test_fifo_within_a_trigger_and_turns_between_triggers() -> None:
    queue: RunQueue[J] = RunQueue()
    for name in ("a0", "a1", "a2", "b0", "b1", "b2"):
        queue.push(J(name, name[0]), 0)
    limits = Limits(total=1)
    assert limits.pump(queue) == ["a0"]
    for expected in ("b0", "a1", "b1", "a2", "b2"):
        limits.finish(queue, limits.running[0].run_id)
        assert limits.pump(queue) == [expected]  # each trigger gets its turn
    assert len(queue) == 0


def test_an_agent_at_its_limit_is_passed_over_whole() -> None:
    queue: RunQueue[J] = RunQueue()
    for i in range(10_000):
        queue.push(J(f"s{i}", f"t{i}", agent="shared"), 0)
    queue.push(J("other", "u", agent="free"), 0)
    limits = Limits(per_agent={"shared": 1})
    assert limits.pump(queue) == ["s0", "other"]
    limits.checks = 0
    for _ in range(100):
        assert limits.pump(queue) == []
    assert limits.checks <= 100  # one look at the shared pool per pump, not 10,000
    limits.finish(queue, "s0")
    assert limits.pump(queue) == ["s1"]


def test_a_trigger_at_its_limit_is_parked_until_one_of_its_runs_ends() -> None:
    queue: RunQueue[J] = RunQueue()
    for i in range(5):
        queue.push(J(f"a{i}", "a"), 0)
    queue.push(J("b0", "b"), 0)
    limits = Limits(per_trigger=1)
    assert limits.pump(queue) == ["a0", "b0"]
    limits.checks = 0
    assert limits.pump(queue) == []
    assert limits.checks == 0  # a parked lane costs nothing
    limits.finish(queue, "b0")
    assert limits.pump(queue) == []  # b's end does not wake a
    limits.finish(queue, "a0")
    assert limits.pump(queue) == ["a1"]


def test_removed_jobs_are_skipped_and_a_requeued_job_is_not_seen_twice() -> None:
    queue: RunQueue[J] = RunQueue()
    job = J("x", "a")
    queue.push(job, 0)
    queue.push(J("y", "a"), 0)
    assert queue.remove("x") is job
    assert queue.remove("x") is None
    queue.push(job, 0)  # pushed again (a retry): only the new entry counts
    assert Limits().pump(queue) == ["y", "x"]
    assert queue.count("a") == 0


def test_backoffs_wait_their_turn() -> None:
    queue: RunQueue[J] = RunQueue()
    queue.push(J("later", "a", not_before=5.0), now=0)
    queue.push(J("now", "a"), now=0)
    assert queue.next_due() == 5.0
    limits = Limits()
    assert limits.pump(queue, now=1) == ["now"]
    assert limits.pump(queue, now=5) == ["later"]
    assert queue.next_due() is None
    assert "later" not in queue


def test_the_global_limit_stops_the_pump() -> None:
    queue: RunQueue[J] = RunQueue()
    for i in range(6):
        queue.push(J(f"r{i}", f"t{i % 3}"), 0)
    limits = Limits(total=2)
    assert limits.pump(queue) == ["r0", "r1"]
    assert limits.pump(queue) == []
    limits.finish(queue, "r0")
    assert limits.pump(queue) == ["r2"]
