"""The event pattern index finds exactly what trying every trigger's pattern would (SPEC 3.4),
and globs match like the regex they stand for, in linear time (SPEC 4)."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_semantic_checks import load_dir
from triggerd.config.models import Trigger
from triggerd.patterns import compile_glob
from triggerd.sources.events import EventIndex

SEGMENT = st.sampled_from(["error", "db", "app", "x", "*", "e?ror", "d*", "timeout"])
GLOB = st.lists(SEGMENT, min_size=1, max_size=3).map(".".join)
REGEX = st.sampled_from(["/^error\\./", "/db$/", "/(app|x)\\.timeout/", "/rr/"])
TYPE = st.lists(st.sampled_from(["error", "db", "app", "x", "timeout", "eRror", "dbx"]), min_size=1, max_size=4).map(
    ".".join
)


def reference_glob(pattern: str) -> re.Pattern[str]:
    """The obvious (backtracking) translation of a glob, the oracle for the linear matcher."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def scan(triggers: list[Trigger], event_type: str) -> set[str]:
    found = set()
    for trigger in triggers:
        pattern = trigger.event.pattern  # type: ignore[union-attr]
        if pattern.startswith("/") and pattern.endswith("/") and len(pattern) > 1:
            if re.search(pattern[1:-1], event_type):  # the REGEX samples mean the same in re and RE2
                found.add(trigger.id)
        elif reference_glob(pattern).fullmatch(event_type):
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
    assert compile_glob("error.*").matches("error.db.connection.lost")
    assert not compile_glob("error.*").matches("errors.db")
    assert compile_glob("*.timeout").matches("a.b.timeout")
    assert compile_glob("e?ror").matches("error")
    assert not compile_glob("e?ror").matches("eror")
    assert compile_glob("a*a").matches("aa")
    assert not compile_glob("a*a").matches("a")  # the first and last piece may not overlap


# Few letters, so that pieces recur and overlap and leftmost placement is put to the test.
GLOB_TEXT = st.text(alphabet="ab.?*", max_size=8)
SUBJECT = st.text(alphabet="ab.\n", max_size=12)


@settings(max_examples=2000, deadline=None)
@given(pattern=GLOB_TEXT, subject=SUBJECT)
def test_the_linear_glob_agrees_with_the_regex_it_stands_for(pattern: str, subject: str) -> None:
    assert compile_glob(pattern).matches(subject) == bool(reference_glob(pattern).fullmatch(subject))


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("*error*timeout*", "error" * 200_000),  # quadratic for the regex .*error.*timeout.*
        ("*error*timeout*", "x" * 1_000_000),
        ("*e?r?r*t?m?o?t*", "e" * 1_000_000),  # '?' pieces: a literal run found everywhere
        ("*a*a*a*a*a*b", "a" * 1_000_000),
    ],
)
def test_a_glob_on_a_megabyte_takes_milliseconds(pattern: str, subject: str) -> None:
    glob = compile_glob(pattern)
    started = time.perf_counter()
    assert not glob.matches(subject)
    assert time.perf_counter() - started < 0.05
