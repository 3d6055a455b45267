"""The inputs of issue 21 that held the event loop, timed in-process (SPEC 4, last paragraph).

Each case is one evaluation the daemon makes on the event loop for one request or event:
- a webhook filter `matches ^(a+)+$` on the 29-byte body {"x": "aaaaaaaaaaaaaaaaaaaaaaaaaaaab"};
- the event pattern /^(a+)+$/ on the event type aaaaaaaaaaaaaaaaaaaaaaaaaaaab;
- the glob *error*timeout* on a 300 KB event type;
- an input mapping $..name on a 975 KB body (refused past 100,000 nodes, so "refused" is the
  answer, not a failure).
The script uses only calls that existed before the change, so the same file times the old code:

    .venv/bin/python bench/bounds.py
    git archive <old-commit> | tar -x -C /tmp/old && PYTHONPATH=/tmp/old .venv/bin/python bench/bounds.py
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from triggerd.conditions import Scope, evaluate, parse_condition
from triggerd.config.loader import load
from triggerd.errors import TriggerdError
from triggerd.mapping import compile_path
from triggerd.sources.events import EventIndex

EVIL = "a" * 28 + "b"


def timed(what: str, action: Callable[[], Any]) -> None:
    started = time.perf_counter()
    try:
        outcome = repr(action())
    except TriggerdError as exc:
        outcome = f"refused ({type(exc).__name__})"
    seconds = time.perf_counter() - started
    print(f"{what:<48} {seconds * 1000:10.2f} ms   {outcome[:40]}")


def index_of(pattern: str) -> EventIndex:
    text = (
        "agent: {id: a, type: command, command: [cat]}\n---\n"
        f"trigger: {{id: t, type: event, event: {{pattern: {json.dumps(pattern)}}}, agent: {{id: a}}}}\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "d.yaml").write_text(text)
        configuration = load(None, paths=[Path(folder) / "d.yaml"], env={}).configuration
    assert configuration is not None
    return EventIndex.build(configuration.triggers.values())


def main() -> None:
    condition, errors = parse_condition({"field": "$.body.x", "operator": "matches", "value": "^(a+)+$"})
    assert condition is not None, errors
    timed("filter matches ^(a+)+$, 29-byte body", lambda: evaluate(condition, {"body": {"x": EVIL}}, Scope.WEBHOOK))

    regex = index_of("/^(a+)+$/")
    timed("event pattern /^(a+)+$/, 29-byte type", lambda: len(regex.candidates(EVIL)))

    glob = index_of("*error*timeout*")
    long_type = "error" * 60_000  # 300 KB
    timed("event pattern *error*timeout*, 300 KB type", lambda: len(glob.candidates(long_type)))

    names = compile_path("$..name")
    body = {"items": [{"name": f"n{i}", "child": {"name": i, "tags": ["a", "b", "c"]}} for i in range(16_000)]}
    size = len(json.dumps(body, separators=(",", ":")))
    timed(f"mapping $..name, {size // 1000} KB body", lambda: len(names.find({"body": body})))


if __name__ == "__main__":
    main()
