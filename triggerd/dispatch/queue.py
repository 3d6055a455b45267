"""The queue of runs waiting to start: per-trigger FIFO lanes that take turns, and a heap of backoffs.

Starting what the limits allow costs O(triggers with waiting runs), not O(waiting
runs): a lane whose head cannot start (its trigger or agent is at its limit) is
passed over whole. Removal (cancel) is O(1) and lazy: entries are checked
against a token when they reach the front.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    run_id: str
    not_before: float

    @property
    def lane(self) -> str: ...


J = TypeVar("J", bound=Queued)


class RunQueue(Generic[J]):
    def __init__(self) -> None:
        self._jobs: dict[str, tuple[int, J]] = {}
        self._per_lane: Counter[str] = Counter()
        self._lanes: dict[str, deque[tuple[int, J]]] = {}
        self._waiting: list[tuple[float, int, J]] = []
        self._tokens = itertools.count()

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._jobs

    def __iter__(self) -> Iterator[J]:
        return (job for _, job in self._jobs.values())

    def count(self, lane: str) -> int:
        return self._per_lane[lane]

    def push(self, job: J, now: float) -> None:
        token = next(self._tokens)
        self._jobs[job.run_id] = (token, job)
        self._per_lane[job.lane] += 1
        if job.not_before > now:
            heapq.heappush(self._waiting, (job.not_before, token, job))
        else:
            self._lanes.setdefault(job.lane, deque()).append((token, job))

    def remove(self, run_id: str) -> J | None:
        entry = self._jobs.pop(run_id, None)
        if entry is None:
            return None
        self._per_lane[entry[1].lane] -= 1
        return entry[1]

    def _live(self, token: int, job: J) -> bool:
        entry = self._jobs.get(job.run_id)
        return entry is not None and entry[0] == token

    def start_ready(
        self, now: float, can_start: Callable[[J], bool], start: Callable[[J], None], room: Callable[[], bool]
    ) -> None:
        """Start, oldest first within each lane, what `can_start` allows while there is `room`; lanes take turns."""
        while self._waiting and self._waiting[0][0] <= now:
            _, token, job = heapq.heappop(self._waiting)
            if self._live(token, job):
                self._lanes.setdefault(job.lane, deque()).append((token, job))
        for lane in list(self._lanes):
            if not room():
                return
            entries = self._lanes.pop(lane)
            while entries:
                token, job = entries[0]
                if not self._live(token, job):
                    entries.popleft()
                    continue
                if not room() or not can_start(job):
                    break
                entries.popleft()
                self.remove(job.run_id)
                start(job)
            if entries:
                self._lanes[lane] = entries  # a visited lane goes to the back: when room runs out, the next gets a turn

    def next_due(self) -> float | None:
        """When the earliest backoff ends (None: nothing is waiting)."""
        while self._waiting and not self._live(self._waiting[0][1], self._waiting[0][2]):
            heapq.heappop(self._waiting)
        return self._waiting[0][0] if self._waiting else None
