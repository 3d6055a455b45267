"""Problems found while loading configuration, and their three printed forms (SPEC 6).

Every printed form is masked (SPEC 2.3): a message may quote a value that came from a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

from triggerd.masking import dumps, mask


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file, located at the offending value."""

    file: str
    line: int
    column: int
    severity: Severity
    message: str
    pointer: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def escalated(self) -> Problem:
        """The same problem as an error (validate --strict)."""
        return Problem(self.file, self.line, self.column, Severity.ERROR, self.message, self.pointer)

    def __str__(self) -> str:
        where = f" (at {self.pointer})" if self.pointer else ""
        return mask(f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}{where}")


def problem_at(file: str, mark: Mark, message: str, pointer: str = "", severity: Severity = Severity.ERROR) -> Problem:
    return Problem(file, mark.line, mark.column, severity, message, pointer)


def sort_key(problem: Problem) -> tuple[str, int, int, str]:
    return (problem.file, problem.line, problem.column, problem.message)


def format_text(problems: Iterable[Problem]) -> str:
    return "".join(f"{p}\n" for p in problems)


def format_json(problems: Sequence[Problem]) -> str:
    valid = not any(p.is_error for p in problems)
    return dumps({"valid": valid, "problems": [asdict(p) for p in problems]}, indent=2) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(problems: Iterable[Problem]) -> str:
    """GitHub Actions workflow commands, one annotation per problem."""
    lines = []
    for p in problems:
        message = mask(f"{p.message} (at {p.pointer})" if p.pointer else p.message)
        lines.append(
            f"::{p.severity} file={_escape_property(p.file)},line={p.line},col={p.column}::{_escape_data(message)}\n"
        )
    return "".join(lines)
