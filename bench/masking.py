"""What masking substituted secrets (SPEC 2.3) adds to the writes of one webhook request.

A webhook request writes its 202 answer and, at the default level, a few log lines; both go
through the masking sinks. This times, per call, the answer's JSON (plain `json.dumps`, then the
masked `dumps` the daemon uses) and one JSON log line, with 0, 10 and 100 registered secrets.
Compare the figures with the daemon's CPU time per request from bench/webhook_ingest.py.

    .venv/bin/python bench/masking.py [--calls 50000]
"""

from __future__ import annotations

import argparse
import json
import logging
import timeit
from collections.abc import Callable
from typing import Any

import triggerd.masking as masking
from triggerd.logs import JsonFormatter
from triggerd.masking import SecretRegistry

ANSWER = {"run_id": "01m8npksxdt6z649yyak41canb", "status": "pending", "trigger_id": "github-pr"}


def log_record() -> logging.LogRecord:
    record = logging.LogRecord(
        "triggerd.dispatch", logging.INFO, __file__, 1, "run %s queued", ("01m8npksxdt6z649yyak41canb",), None
    )
    extra: dict[str, Any] = {"trigger_id": "github-pr", "agent_id": "reviewer", "run_id": "01m8npksxdt6z649yyak41canb"}
    record.__dict__.update(extra)
    return record


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call: the best of 15 rounds (the machine is shared; the best is the least disturbed)."""
    return min(timeit.repeat(fn, number=calls, repeat=15)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    record, formatter = log_record(), JsonFormatter()
    plain = per_call(lambda: json.dumps(ANSWER, default=str, ensure_ascii=False), args.calls)
    print(f"plain json.dumps of the 202 answer: {plain:.2f} us")
    for count in (0, 10, 100):
        registry = SecretRegistry()
        for i in range(count):
            registry.add(f"secret-value-{i:04d}-abcdef")
        masking.SECRETS = registry
        answer = per_call(lambda: masking.dumps(ANSWER), args.calls)
        line = per_call(lambda: formatter.format(record), args.calls)
        print(f"{count:3} secrets: masked 202 answer {answer:5.2f} us, JSON log line {line:5.2f} us")


if __name__ == "__main__":
    main()
