"""The dispatcher's queue: FIFO per trigger, triggers take turns, lazy removal, backoffs."""

from __future__ import annotations

from dataclasses import dataclass

from triggerd.dispatch.queue import RunQueue


@dataclass
class J:
    run_id: str
    trigger: str
    not_before: float = 0.0

    @property
    def lane(self) -> str:
        return self.trigger


def started(queue: RunQueue[J], slots: int, blocked: frozenset[str] = frozenset(), now: float = 0.0) -> list[str]:
    out: list[str] = []
    queue.start_ready(
        now,
        can_start=lambda j: j.trigger not in blocked,
        start=lambda j: out.append(j.run_id),
        room=lambda: len(out) < slots,
    )
    return out


def test_fifo_within_a_trigger_and_turns_between_triggers() -> None:
    queue: RunQueue[J] = RunQueue()
    for i in range(3):
        queue.push(J(f"a{i}", "a"), 0)
    for i in range(3):
        queue.push(J(f"b{i}", "b"), 0)
    assert started(queue, 1) == ["a0"]
    assert started(queue, 1) == ["b0"]  # a had its turn
    assert started(queue, 1) == ["a1"]
    assert started(queue, 10) == ["b1", "b2", "a2"]
    assert len(queue) == 0


def test_a_blocked_trigger_does_not_hold_back_others() -> None:
    queue: RunQueue[J] = RunQueue()
    for i in range(1000):
        queue.push(J(f"a{i}", "a"), 0)
    queue.push(J("b0", "b"), 0)
    calls = []
    out: list[str] = []
    queue.start_ready(
        0,
        can_start=lambda j: calls.append(j.run_id) or j.trigger != "a",
        start=lambda j: out.append(j.run_id),
        room=lambda: True,
    )
    assert out == ["b0"]
    assert calls == ["a0", "b0"]  # the blocked lane was passed over at its head, not scanned
    assert queue.count("a") == 1000


def test_removed_jobs_are_skipped_and_a_requeued_job_is_not_seen_twice() -> None:
    queue: RunQueue[J] = RunQueue()
    job = J("x", "a")
    queue.push(job, 0)
    queue.push(J("y", "a"), 0)
    assert queue.remove("x") is job
    assert queue.remove("x") is None
    queue.push(job, 0)  # pushed again (a retry): only the new entry counts
    assert started(queue, 10) == ["y", "x"]
    assert queue.count("a") == 0


def test_backoffs_wait_their_turn() -> None:
    queue: RunQueue[J] = RunQueue()
    queue.push(J("later", "a", not_before=5.0), now=0)
    queue.push(J("now", "a"), now=0)
    assert queue.next_due() == 5.0
    assert started(queue, 10, now=1) == ["now"]
    assert started(queue, 10, now=5) == ["later"]
    assert queue.next_due() is None
    assert "later" not in queue
