"""Logging: one JSON object per line (or plain text), with run, trigger and agent ids where they apply.

Both formatters mask substituted secrets (SPEC 2.3) in everything they write: the message, the
extra fields and tracebacks, so no call site has to remember to.

Lines logged on the event loop at info and below are written together once per turn of the loop
(one write for every line of that turn) rather than each with its own write: under webhook load
a line per firing was close to a fifth of the loop. A warning or an error is written at once,
with whatever was waiting before it, and so is every line logged off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

from triggerd.config.models import LoggingSettings
from triggerd.masking import dumps, mask

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        # strftime once a second: the rest of the stamp is the milliseconds.
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return dumps(entry)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():7} {record.getMessage()}"
        line = f"{line}  {fields}" if fields else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask(line)


TextFormatter.converter = time.gmtime


class TurnHandler(logging.Handler):
    """Writes to a stream; lines at info and below logged on a running event loop wait for the
    end of the loop's turn and go out in one write with the others of that turn."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        loop = asyncio._get_running_loop()  # None off the loop (threads, startup): write now
        if loop is None or record.levelno > logging.INFO:
            self._pending.append(line)
            self.flush()
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        if not self._pending:
            return
        with self.lock:  # type: ignore[union-attr]
            lines, self._pending = self._pending, []
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing else to tell it to
                pass


def configure_logging(settings: LoggingSettings) -> None:
    # No formatter here writes the caller's file and line, the thread or the process: not looking
    # them up saves a walk of the stack per line (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = TurnHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # its "N changes detected"; ours says what reloaded
