"""The event pattern index finds exactly what trying every trigger's pattern would (SPEC 3.4)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_semantic_checks import load_dir
from triggerd.config.models import Trigger
from triggerd.sources.events import EventIndex, glob_regex, type_regex

SEGMENT = st.sampled_from(["error", "db", "app", "x", "*", "e?ror", "d*", "timeout"])
GLOB = st.lists(SEGMENT, min_size=1, max_size=3).map(".".join)
REGEX = st.sampled_from(["/^error\\./", "/db$/", "/(app|x)\\.timeout/", "/rr/"])
TYPE = st.lists(st.sampled_from(["error", "db", "app", "x", "timeout", "eRror", "dbx"]), min_size=1, max_size=4).map(
    ".".join
)


def scan(triggers: list[Trigger], event_type: str) -> set[str]:
    found = set()
    for trigger in triggers:
        pattern = trigger.event.pattern  # type: ignore[union-attr]
        if pattern.startswith("/") and pattern.endswith("/") and len(pattern) > 1:
            if type_regex(pattern).search(event_type):
                found.add(trigger.id)
        elif glob_regex(pattern).match(event_type):
            found.add(trigger.id)
    return found


@settings(max_examples=60, deadline=None)
@given(patterns=st.lists(st.one_of(GLOB, REGEX), min_size=1, max_size=12), types=st.lists(TYPE, max_size=20))
def test_the_index_agrees_with_a_scan(patterns: list[str], types: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        docs = ["agent: {id: a, type: command, command: [cat]}"] + [
            f"trigger: {{id: t{i}, type: event, event: {{pattern: '{p}'}}, agent: {{id: a}}}}"
            for i, p in enumerate(patterns)
        ]
        (Path(folder) / "d.yaml").write_text("\n---\n".join(docs))
        configuration = load_dir(Path(folder)).configuration
    assert configuration is not None
    triggers = list(configuration.triggers.values())
    index = EventIndex.build(triggers)
    for event_type in types:
        assert {t.id for t in index.candidates(event_type)} == scan(triggers, event_type)


def test_star_spans_dots_and_question_mark_is_one_character() -> None:
    assert glob_regex("error.*").match("error.db.connection.lost")
    assert not glob_regex("error.*").match("errors.db")
    assert glob_regex("*.timeout").match("a.b.timeout")
    assert glob_regex("e?ror").match("error")
    assert not glob_regex("e?ror").match("eror")
