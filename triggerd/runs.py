"""Runs: one dispatch of one trigger firing to one agent (SPEC 5.2)."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class Source(StrEnum):
    WEBHOOK = "webhook"
    SCHEDULE = "schedule"
    EVENT = "event"
    MANUAL = "manual"
    REPLAY = "replay"


AUTOMATIC = frozenset({Source.WEBHOOK, Source.SCHEDULE, Source.EVENT})  # what a pause stops (not a manual fire)


class SkipReason(StrEnum):
    OVERLAP = "overlap"
    QUEUE_FULL = "queue_full"
    MISSED = "missed"
    PAUSED = "paused"
    BUDGET = "budget"
    DEBOUNCED = "debounced"  # superseded by a later firing of the same burst (SPEC 12)


class WaitReason(StrEnum):
    """Why a pending run waits (SPEC 12): shown as its `reason` until it starts."""

    DEBOUNCED = "debounced"
    THROTTLED = "throttled"


class CancelReason(StrEnum):
    REQUESTED = "requested"
    REPLACED = "replaced"
    SHUTDOWN = "shutdown"
    TRIGGER_REMOVED = "trigger_removed"


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit value as two digits
_SHIFTS = range(120, -10, -10)


# Run ids need to be unique, not secret (the admin API is what guards runs): a generator
# seeded once from the OS saves a system call per run.
_random = random.Random(secrets.token_bytes(32))


_last_id = 0


def new_run_id() -> str:
    """A ULID-style id: 10 characters of milliseconds then 16 random, so ids sort by creation.

    Monotonic within the process (never less than one more than the last), so runs created one
    after another in the same millisecond, such as the runs of one broker delivery, also sort
    in the order they were created.
    """
    global _last_id
    value = max((time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80), _last_id + 1)
    _last_id = value
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])  # 13 pairs of 5-bit digits


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger fired: what the dispatcher is asked to turn into a run."""

    trigger_id: str
    agent_id: str
    input: Mapping[str, Any]
    source: Source
    nominal_time: str | None = None
    idempotency_key: str | None = None
    dedupe_seconds: float = 0.0
    replay_of: str | None = None
    chain_depth: int = 0
    context: Mapping[str, Any] | None = None  # the trigger context (3.5), for flow-control keys (SPEC 12)


@dataclass(frozen=True, slots=True)
class FlowKeys:
    """A run's flow-control groups (SPEC 12): each key's value as JSON ("null" when missing), or
    None when the trigger has no such control."""

    concurrency: str | None = None
    throttle: str | None = None
    debounce: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessGroup:
    """A command attempt's process group, and what tells its leader from a later process with the same id."""

    pgid: int  # the leader's pid: a command runs in its own session
    start_ticks: int  # the leader's start, in clock ticks since boot (/proc/PID/stat field 22)
    boot_id: str  # /proc/sys/kernel/random/boot_id: ticks and pids mean nothing across a reboot


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    started_at: str
    finished_at: str | None
    status: RunStatus
    error: str | None
    process: ProcessGroup | None = None  # a command attempt's, once started (SPEC 5.2); not in the API form
    steps: tuple[Mapping[str, Any], ...] = ()  # its tool calls (SPEC 5.1); the API shows them on the run

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": str(self.status),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Run:
    """A run as the store keeps it; to_json() is its API form."""

    id: str
    trigger_id: str
    agent_id: str
    status: RunStatus
    input: Any
    source: Source
    created_at: str
    reason: str | None = None
    output: Any = None
    error: str | None = None
    usage: Any = None
    nominal_time: str | None = None
    idempotency_key: str | None = None
    replay_of: str | None = None
    chain_depth: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    next_attempt_at: str | None = None
    dead_letter: bool = False
    keys: FlowKeys = FlowKeys()
    attempts: tuple[Attempt, ...] = field(default=())

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Every attempt's tool calls (SPEC 5.1), oldest first, each with its attempt's number: a
        retry starts the loop afresh, and the calls of the attempts before it stay on record."""
        return [{"attempt": a.number, **step} for a in self.attempts for step in a.steps]

    @property
    def failures(self) -> int:
        """Attempts that count against retry.max_attempts (an interrupted one counts as failed)."""
        return sum(a.status in (RunStatus.FAILED, RunStatus.TIMED_OUT) for a in self.attempts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger_id": self.trigger_id,
            "agent_id": self.agent_id,
            "status": str(self.status),
            "reason": self.reason,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "attempts": [a.to_json() for a in self.attempts],
            "usage": self.usage,
            "steps": self.steps,
            "source": str(self.source),
            "nominal_time": self.nominal_time,
            "idempotency_key": self.idempotency_key,
            "replay_of": self.replay_of,
            "chain_depth": self.chain_depth,
            "dead_letter": self.dead_letter,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What the dispatcher tells listeners (the event bus) about a run that reached a final status."""

    run_id: str
    trigger_id: str
    agent_id: str
    status: RunStatus
    attempts: int
    chain_depth: int
    output: Any = None
    error: str | None = None
    retries_exhausted: bool = False
