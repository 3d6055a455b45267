"""Every exception triggerd raises on purpose, rooted at TriggerdError."""

from __future__ import annotations


class TriggerdError(Exception):
    """Root of triggerd's own exceptions."""


class ConfigError(TriggerdError):
    """Raised by the loader when the settings file cannot be used at all."""


class DurationError(TriggerdError, ValueError):
    """Raised by parse_duration for text that is not a duration."""


class SubstitutionError(TriggerdError, ValueError):
    """Raised by the substitution parser for malformed ${...} expressions."""


class PathError(TriggerdError, ValueError):
    """Raised by mapping.compile_path for JSONPath that does not compile."""


class PathTooBroad(TriggerdError):
    """Raised by mapping.JsonPath.find when a path would visit more nodes of one context than allowed."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(f"JSONPath {path} would visit more than {limit:,} nodes of this context")
        self.path = path


class PatternError(TriggerdError, ValueError):
    """Raised by patterns.compile_regex for a regular expression RE2 cannot run."""


class TemplateError(TriggerdError, ValueError):
    """Raised by mapping.Template for malformed {{ }} placeholders, or a missing key at render time."""


class ConditionError(TriggerdError, ValueError):
    """Raised by conditions.parse_condition; carries the JSON pointer of the offending node."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


class CronError(TriggerdError, ValueError):
    """Raised by schedules.check_cron for expressions that are malformed or can never fire."""


class StoreError(TriggerdError):
    """Raised by a store when its database cannot be read or written; nothing was acknowledged."""


class AgentFailure(TriggerdError):
    """Raised by an agent backend when an attempt failed; `retryable` says whether retry may help."""

    def __init__(self, message: str, *, retryable: bool, output: object = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.output = output
        self.reason = reason  # the run's `reason` when this failure ends it (max_turns, say)


class NotFound(TriggerdError):
    """Raised by the dispatcher for a trigger or run id it does not know."""


class Conflict(TriggerdError):
    """Raised by the dispatcher for a request the run's state forbids (cancel a finished run, say)."""


class Unavailable(TriggerdError):
    """Raised by the dispatcher once it is draining for shutdown: the caller should answer 503."""


class AuthFailure(TriggerdError):
    """Raised by a webhook verifier when a request does not prove its origin; the message names no secret."""


class MissingInput(TriggerdError):
    """Raised by mapping.build_input when a required input_mapping path matches nothing."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(f"required input '{key}' is missing: {path} matched nothing")
        self.key = key
        self.path = path
