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
