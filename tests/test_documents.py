"""YAML files -> documents: marks, the YAML 1.2 scalars, and failures that stay local."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import AGENT, Write, found, load_dir
from triggerd.config.documents import read_documents
from triggerd.config.problems import Mark, Severity


def test_marks_point_at_values_and_keys_in_every_document(write: Write) -> None:
    path = write("two.yaml", "agent:\n  id: a\n---\n# comment\ntrigger:\n  agent:\n    id:   spaced\n")
    docs, problems = read_documents(path, "two.yaml", {})
    assert problems == []
    assert [d.index for d in docs] == [0, 1]
    assert docs[1].mark("/trigger/agent/id") == Mark(7, 11)
    assert docs[1].mark("/trigger/agent/id", key=True) == Mark(7, 5)
    assert docs[1].mark("/trigger/agent/id/missing/deeper") == Mark(7, 11)


def test_scalars_follow_yaml_1_2_core(write: Write) -> None:
    text = "a: yes\nb: on\nc: true\nd: 010\ne: 0o10\nf: 1.5e3\ng: ~\nh: 2026-01-01\ni: '12'\nj: .inf\n"
    docs, _ = read_documents(write("s.yaml", text), "s.yaml", {})
    assert docs[0].value == {
        "a": "yes",
        "b": "on",
        "c": True,
        "d": 10,
        "e": 8,
        "f": 1500.0,
        "g": None,
        "h": "2026-01-01",
        "i": "12",
        "j": float("inf"),
    }


def test_keys_are_the_text_as_written(write: Write) -> None:
    docs, _ = read_documents(write("k.yaml", "on: 1\n123: 2\nnull: 3\n"), "k.yaml", {})
    assert docs[0].value == {"on": 1, "123": 2, "null": 3}


def test_duplicate_keys_are_an_error_at_the_second(write: Write) -> None:
    docs, _ = read_documents(write("d.yaml", "a: 1\nb: 2\na: 3\n"), "d.yaml", {})
    assert [str(p) for p in docs[0].problems] == ["d.yaml:3:1: error: duplicate key 'a' (first at line 1) (at /a)"]


def test_syntax_error_is_located_and_loads_nothing_of_the_file(write: Write) -> None:
    docs, problems = read_documents(write("bad.yaml", AGENT + "---\nagent:\n  id: [unclosed\n"), "bad.yaml", {})
    assert docs == []
    # At the bracket that is never closed, not at the end of the file where the parser gave up.
    assert [(p.line, p.column) for p in problems] == [(7, 7)]
    assert problems[0].message.startswith("YAML syntax error: while parsing a flow sequence")


def test_an_unclosed_quote_is_reported_at_its_opening_quote(write: Write) -> None:
    text = 'trigger:\n  id: "nightly\n  type: schedule\n  agent: {id: worker}\n'
    _, problems = read_documents(write("quote.yaml", text), "quote.yaml", {})
    assert [str(p) for p in problems] == [
        "quote.yaml:2:7: error: YAML syntax error: while scanning a quoted scalar found unexpected end of stream"
    ]
    later = 'a: "one\n---\nb: 2\n'  # the scanner stops at the next document marker instead
    _, problems = read_documents(write("later.yaml", later), "later.yaml", {})
    assert [(p.line, p.column) for p in problems] == [(1, 4)]


def test_a_bracket_left_open_onto_a_later_line_is_reported_at_the_bracket(write: Write) -> None:
    text = "trigger:\n  type: [webhook\n  id: x\n"
    _, problems = read_documents(write("open.yaml", text), "open.yaml", {})
    assert [(p.line, p.column) for p in problems] == [(2, 9)]
    wrong_key = "trigger:\n  id: a: b\n"  # no opening involved: where the parser stopped is the mistake
    _, problems = read_documents(write("colon.yaml", wrong_key), "colon.yaml", {})
    assert [(p.line, p.column) for p in problems] == [(2, 8)]


def test_alias_bomb_is_refused(write: Write) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    _, problems = read_documents(write("bomb.yaml", "\n".join(lines) + "\n"), "bomb.yaml", {})
    assert [p.message for p in problems] == ["document 1 expands to more than 200000 nodes"]


def test_merge_keys_and_anchors(write: Write) -> None:
    text = "base: &base {a: 1, b: 2}\nthing:\n  <<: *base\n  b: 3\n"
    docs, problems = read_documents(write("m.yaml", text), "m.yaml", {})
    assert problems == [] and docs[0].problems == []
    assert docs[0].value["thing"] == {"a": 1, "b": 3}


def test_unsupported_tags_are_reported(write: Write) -> None:
    docs, _ = read_documents(write("t.yaml", "a: !Ref thing\n"), "t.yaml", {})
    assert [str(p) for p in docs[0].problems] == ["t.yaml:1:4: error: unsupported YAML tag !Ref (at /a)"]


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    _, problems = read_documents(path, "latin.yaml", {})
    assert [str(p) for p in problems] == ["latin.yaml:2:7: error: file is not UTF-8 text"]


def test_a_broken_file_among_good_ones_affects_nothing_else(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    for name in ("a", "b", "c"):
        write(
            f"{name}.yaml",
            f"trigger:\n  id: {name}\n  type: event\n  event: {{pattern: x}}\n  agent: {{id: worker}}\n",
        )
    broken = write("broken.yaml", "trigger:\n  id: broken\n  type: event\n  event: {pattern: x\n")
    bad_schema = write("schema.yaml", "trigger:\n  id: s\n  type: event\n  enabled: maybe\n  agent: {id: worker}\n")
    result = load_dir(tmp_path)
    assert [(f, line) for f, line, _, _ in found(result)] == [
        (str(broken), 4),
        (str(bad_schema), 2),
        (str(bad_schema), 4),
    ]
    assert [m for _, _, _, m in found(result)][1:] == [
        "missing required key 'event'",
        "expected boolean, got string 'maybe'",
    ]
    assert result.configuration is not None
    assert sorted(result.configuration.triggers) == ["a", "b", "c"]


def test_document_that_is_not_a_definition(write: Write, tmp_path: Path) -> None:
    path = write("x.yaml", "- just\n- a list\n")
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            1,
            "error",
            "a definition document has exactly one top-level key, 'trigger', 'agent' or 'source' (found: list)",
        )
    ]


def test_empty_file_warns(write: Write, tmp_path: Path) -> None:
    path = write("empty.yaml", "# nothing yet\n")
    assert found(load_dir(tmp_path)) == [(str(path), 1, "warning", "no trigger, agent or source in this file")]


def test_schema_messages_locate_unknown_keys_and_wrong_types(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write(
        "t.yaml",
        """\
        trigger:
          id: t
          type: schedule
          schedule: {cron: "0 9 * * *"}
          webhook: {}
          agent: {id: worker, inputs: {}}
          overlap: sometimes
          max_concurrent: 0
        """,
    )
    assert found(load_dir(tmp_path)) == [
        (str(path), 5, "error", "'webhook' is not allowed with this type"),
        (str(path), 6, "error", "unknown key 'inputs'; did you mean 'input'?"),
        (str(path), 7, "error", "'sometimes' is not one of: queue, skip, replace"),
        (str(path), 8, "error", "0 must be >= 1"),
    ]


def test_agent_keys_depend_on_the_type(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", "agent:\n  id: a\n  type: command\n  command: [echo]\n  model: claude\n")
    assert found(load_dir(tmp_path)) == [(str(path), 5, "error", "unknown key 'model'")]


def test_missing_severity_is_the_callers(write: Write) -> None:
    path = write("e.yaml", "a: ${NOPE}\n")
    docs, _ = read_documents(path, "e.yaml", {}, missing=Severity.WARNING)
    assert [(p.severity, p.message) for p in docs[0].problems] == [
        (Severity.WARNING, "environment variable NOPE is not set")
    ]
    assert docs[0].value == {"a": "${NOPE}"}
