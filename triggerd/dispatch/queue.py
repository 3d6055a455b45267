"""The queue of runs waiting to start, built so that a pump costs O(1) per start, not per waiting run.

- Each trigger has a FIFO *lane*; lanes are grouped by agent (their *pool*).
- A pump visits pools in turn and, within a pool, lanes in turn. The head of a lane
  is offered to `check`: it starts, or the answer says what is full:
  - the whole daemon: the pump stops;
  - the agent: the pool is passed over whole until the next pump;
  - the trigger: the lane is *parked* until a run of that trigger ends (`release`).
- Backoffs wait in a heap and join their lane when due.
- Removal (cancel) is O(1) and lazy: entries are checked against a token at the head.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Generic, Protocol, TypeVar


class Verdict(Enum):
    START = "start"
    TRIGGER_FULL = "trigger_full"
    AGENT_FULL = "agent_full"
    GLOBAL_FULL = "global_full"


class Queued(Protocol):
    run_id: str
    not_before: float

    @property
    def lane(self) -> str: ...

    @property
    def pool(self) -> str: ...


J = TypeVar("J", bound=Queued)


class RunQueue(Generic[J]):
    def __init__(self) -> None:
        self._jobs: dict[str, tuple[int, J]] = {}
        self._per_lane: Counter[str] = Counter()
        self._lanes: dict[str, deque[tuple[int, J]]] = {}
        self._lane_pool: dict[str, str] = {}
        self._ready: dict[str, dict[str, None]] = {}  # pool -> lanes to offer, in turn (ordered sets)
        self._parked: set[str] = set()
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
            self._join(token, job)

    def _join(self, token: int, job: J) -> None:
        self._lanes.setdefault(job.lane, deque()).append((token, job))
        self._lane_pool[job.lane] = job.pool
        if job.lane not in self._parked:
            self._ready.setdefault(job.pool, {})[job.lane] = None

    def remove(self, run_id: str) -> J | None:
        entry = self._jobs.pop(run_id, None)
        if entry is None:
            return None
        self._per_lane[entry[1].lane] -= 1
        return entry[1]

    def release(self, lane: str) -> None:
        """A run of this lane's trigger ended: a parked lane may try again."""
        if lane in self._parked:
            self._parked.discard(lane)
            if self._lanes.get(lane):
                self._ready.setdefault(self._lane_pool[lane], {})[lane] = None

    def _live(self, token: int, job: J) -> bool:
        entry = self._jobs.get(job.run_id)
        return entry is not None and entry[0] == token

    def _head(self, lane: str) -> J | None:
        entries = self._lanes.get(lane)
        while entries:
            token, job = entries[0]
            if self._live(token, job):
                return job
            entries.popleft()
        self._lanes.pop(lane, None)
        return None

    def start_ready(self, now: float, check: Callable[[J], Verdict], start: Callable[[J], None]) -> None:
        """Start, oldest first within each lane, whatever `check` allows; pools and lanes take turns."""
        while self._waiting and self._waiting[0][0] <= now:
            _, token, due = heapq.heappop(self._waiting)
            if self._live(token, due):
                self._join(token, due)
        for pool in list(self._ready):
            lanes = self._ready.pop(pool)
            turns = deque(lanes)
            stop = False
            while turns:
                lane = turns.popleft()
                job = self._head(lane)
                if job is None:
                    del lanes[lane]
                    continue
                verdict = check(job)
                if verdict is Verdict.GLOBAL_FULL:
                    stop = True
                    break
                if verdict is Verdict.AGENT_FULL:
                    break
                if verdict is Verdict.TRIGGER_FULL:
                    del lanes[lane]
                    self._parked.add(lane)
                    continue
                self._lanes[lane].popleft()
                self.remove(job.run_id)
                start(job)
                del lanes[lane]
                if self._head(lane) is not None:
                    lanes[lane] = None  # to the back: the next lane gets the next turn
                    turns.append(lane)
            if lanes:
                self._ready[pool] = lanes  # to the back of the pools
            if stop:
                return

    def next_due(self) -> float | None:
        """When the earliest backoff ends (None: nothing is waiting)."""
        while self._waiting and not self._live(self._waiting[0][1], self._waiting[0][2]):
            heapq.heappop(self._waiting)
        return self._waiting[0][0] if self._waiting else None
