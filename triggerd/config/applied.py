"""The configuration a daemon runs, as it was applied, and which problems of a new load block a reload.

SPEC 8: a reload is rejected only when a file changed since the running configuration was
applied fails, or when the change breaks a check across files. A file that was already failing
then, and has not changed, stays left out and blocks nothing. "Changed" is decided by content:
the SHA-256 of each definition file's bytes, recorded when the configuration was applied; a new
or deleted file is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from triggerd.clock import isoformat
from triggerd.config.loader import LoadResult, display_path
from triggerd.config.models import AnyAgent, Configuration, Origin, Trigger
from triggerd.config.problems import Mark, Problem, Severity, problem_at, sort_key


@dataclass(frozen=True, slots=True)
class Applied:
    """The load the daemon runs (its configuration, the problems of what it left out, each file's
    digest) and when it was applied."""

    result: LoadResult
    at: datetime

    @property
    def configuration(self) -> Configuration:
        assert self.result.configuration is not None, "only a usable load is ever applied"
        return self.result.configuration

    def changed(self, candidate: LoadResult) -> set[str]:
        """Definition files (as named in problems) added, deleted or edited since this was applied."""
        before, after = self.result.digests, candidate.digests
        return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}

    def blocking(self, candidate: LoadResult) -> list[Problem]:
        """The problems that reject `candidate` as the next configuration; none: apply it.

        An error in a changed file blocks. So does a definition of an unchanged file that runs now
        and would be left out (its agent changed and failed, or was deleted; a new file took its id
        or its route): that is reported by the errors the change caused in its file.
        """
        if candidate.configuration is None:
            return candidate.errors  # the settings file is unusable
        changed = self.changed(candidate)
        blocking = {p for p in candidate.errors if p.file in changed}
        known = set(self.result.problems)
        new_errors = [p for p in candidate.errors if p.file not in changed and p not in known]
        for kind, origin in self._lost(candidate.configuration, changed):
            caused = [p for p in new_errors if p.file == origin.file]
            blocking.update(caused or [_would_be_left_out(kind, origin)])
        return sorted(blocking, key=sort_key)

    def _lost(self, candidate: Configuration, changed: set[str]) -> list[tuple[str, Origin]]:
        lost: list[tuple[str, Origin]] = []
        running = self.configuration
        pairs: tuple[tuple[str, Mapping[str, Trigger | AnyAgent], Mapping[str, Trigger | AnyAgent]], ...] = (
            ("trigger", running.triggers, candidate.triggers),
            ("agent", running.agents, candidate.agents),
        )
        for kind, before, after in pairs:
            for ident, definition in before.items():
                if definition.origin.file in changed:
                    continue
                now = after.get(ident)
                if now is None or now.origin != definition.origin:
                    lost.append((f"{kind} '{ident}'", definition.origin))
        return lost

    def to_json(self) -> dict[str, Any]:
        """What GET /v1/config shows of it (docs/operations.md): files, problems, when."""
        configuration = self.configuration
        problems = self.result.problems
        files = []
        for name, digest in sorted(self.result.digests.items()):
            files.append(
                {
                    "file": name,
                    "sha256": digest or None,
                    "triggers": sorted(t.id for t in configuration.triggers.values() if t.origin.file == name),
                    "agents": sorted(a.id for a in configuration.agents.values() if a.origin.file == name),
                    "errors": sum(p.file == name and p.is_error for p in problems),
                    "warnings": sum(p.file == name and not p.is_error for p in problems),
                }
            )
        settings = configuration.settings.path
        return {
            "applied_at": isoformat(self.at),
            "settings_file": display_path(settings) if settings is not None else None,
            "files": files,
            "problems": [asdict(p) for p in problems],
        }

    def problem_counts(self) -> dict[Severity, int]:
        """The problems of the running configuration by severity (the metric triggerd_config_problems)."""
        return {severity: sum(p.severity is severity for p in self.result.problems) for severity in Severity}


def _would_be_left_out(what: str, origin: Origin) -> Problem:
    # Every way a loaded definition can be left out reports an error in its own file; this is
    # the safety net that still names it should a future check forget to.
    return problem_at(origin.file, Mark(origin.line, origin.column), f"{what} would be left out by this change")


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """The outcome of the last reload, for GET /v1/config."""

    at: datetime
    reason: str
    applied: bool
    problems: tuple[Problem, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "at": isoformat(self.at),
            "reason": self.reason,
            "status": "reloaded" if self.applied else "rejected",
            "problems": [asdict(p) for p in self.problems],
        }
