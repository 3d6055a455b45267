"""RE2 regular expressions (SPEC 4): what is refused and why, and text JSON admits but UTF-8 does not."""

from __future__ import annotations

import time

import pytest

from triggerd.conditions import Scope, evaluate, parse_condition
from triggerd.errors import PatternError
from triggerd.patterns import RegexSet, compile_regex


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a)\\1", "invalid escape sequence: \\1 (backreferences are not supported by RE2)"),
        ("a(?=b)", "invalid perl operator: (?= (lookahead is not supported by RE2)"),
        ("a(?!b)", "invalid perl operator: (?! (lookahead is not supported by RE2)"),
        ("(?<=a)b", "invalid perl operator: (?<= (lookbehind is not supported by RE2)"),
        ("a\\Z", "invalid escape sequence: \\Z (RE2 spells end of text \\z)"),
        ("a++", "bad repetition operator: ++ (possessive quantifiers are not supported by RE2)"),
        ("[a-", "missing ]: [a-"),
    ],
)
def test_what_re2_cannot_run_is_refused_with_the_reason(pattern: str, message: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_regex(pattern)
    assert str(info.value) == message


def test_python_spellings_re2_shares_are_accepted() -> None:
    assert compile_regex("(?P<n>a)(?i:B)\\z").search("xaB")
    assert not compile_regex("^a$").search("a\n")  # RE2's $ is the very end, unlike Python's


def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    regex = compile_regex("^(a+)+$")
    subject = "a" * 100_000 + "b"
    started = time.perf_counter()
    assert not regex.search(subject)
    assert regex.search("a" * 100_000)
    assert time.perf_counter() - started < 0.1


def test_a_lone_surrogate_from_json_is_matched_not_a_crash() -> None:
    condition, errors = parse_condition({"field": "$.body.x", "operator": "matches", "value": "^a.b$"})
    assert condition is not None, errors
    assert evaluate(condition, {"body": {"x": "a\ud800b"}}, Scope.WEBHOOK)
    assert RegexSet(["b$", "^x"]).matching("a\ud800b") == {0}
    assert compile_regex("a\ud800").search("xa\ud800")  # in a pattern (YAML admits "\ud800" too)
    assert RegexSet(["a\ud800"]).matching("xa\ud800") == {0}


def test_a_regex_set_finds_what_each_expression_would() -> None:
    texts = ["^error\\.", "db$", "(app|x)\\.timeout", "", "(?i)ERROR"]
    regexes = RegexSet(texts)
    for subject in ["error.db", "app.timeout", "x", "", "Error.x.db"]:
        assert regexes.matching(subject) == {i for i, text in enumerate(texts) if compile_regex(text).search(subject)}
