"""JSONPath compilation and `{{ dotted.path }}` templates (SPEC 5.1)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd.errors import PathError, PathTooBroad, TemplateError
from triggerd.mapping import Template, compile_path
from triggerd.pathwalk import MAX_PATH_NODES


def test_jsonpath_finds_every_match() -> None:
    path = compile_path("$.body.labels[*].name")
    assert path.find({"body": {"labels": [{"name": "a"}, {"name": "b"}]}}) == ["a", "b"]
    assert compile_path("$.body.labels[*].name") is path  # compiled once


@pytest.mark.parametrize("text", ["body.text", "$.body[", ""])
def test_bad_jsonpath(text: str) -> None:
    with pytest.raises(PathError):
        compile_path(text)


def test_template_renders_strings_raw_and_the_rest_as_json() -> None:
    template = Template.parse("Hi {{ user.name }} ({{user.id}}): {{ tags }} {{ items.1 }}")
    data = {"user": {"name": "Ada", "id": 7}, "tags": ["a", "é"], "items": ["x", "y"]}
    assert template.render(data) == 'Hi Ada (7): ["a", "é"] y'
    assert template.fields == ("user.name", "user.id", "tags", "items.1")


def test_template_missing_key_names_it() -> None:
    with pytest.raises(TemplateError) as info:
        Template.parse("{{ user.email }}").render({"user": {}})
    assert str(info.value) == "template key 'user.email' is missing from the run input"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ }}", "placeholder '{{ }}' is not a dotted path like {{ a.b }}"),
        ("{{ a b }}", "placeholder '{{ a b }}' is not a dotted path like {{ a.b }}"),
        ("x {{ a", "unclosed '{{' in 'x {{ a'"),
    ],
)
def test_malformed_templates(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template.parse(text)
    assert str(info.value) == message


def test_text_without_placeholders_is_literal() -> None:
    assert Template.parse("plain } { text").render({}) == "plain } { text"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "x-y", "0"]), inner, max_size=3)
    ),
    max_leaves=12,
)
# A step of a path, in the grammar triggerd walks itself (pathwalk) rather than through jsonpath-ng.
STEP = st.sampled_from(
    [
        ".a",
        "['b']",
        "['x-y']",
        "['0']",
        "['a','b']",
        "[*]",
        ".*",
        "[0]",
        "[1]",
        "[-1]",
        "[0,2]",
        "[1:]",
        "[:2]",
        "[::2]",
        "[?(@.a)]",
        "[?(@.a==1)]",
        "[?(@.b>0&&@.a)]",
        "..a",
        "..b",
        "..[0]",
        "..*",
        "..['a','x-y']",
        "..[?(@.a)]",
    ]
)


@settings(max_examples=600, deadline=None)
@given(data=JSON, steps=st.lists(STEP, max_size=4))
def test_the_bounded_walk_agrees_with_jsonpath_ng(data: object, steps: list[str]) -> None:
    path = compile_path("$" + "".join(steps))
    assert path.steps is not None  # walked by triggerd, not handed to jsonpath-ng
    assert path.find(data) == [m.value for m in path.expression.find(data)]


def wide_and_deep(nodes: int) -> dict[str, object]:
    """About `nodes` nodes: records with a name, nested a few levels."""
    return {"items": [{"name": f"n{i}", "child": {"name": i, "tags": ["a", "b"]}} for i in range(nodes // 7)]}


def test_recursive_descent_past_the_bound_is_refused_quickly() -> None:
    path = compile_path("$..name")
    small = wide_and_deep(1000)
    assert path.find(small) == [m.value for m in path.expression.find(small)]  # within the bound: as before
    large = {"body": wide_and_deep(MAX_PATH_NODES * 3)}
    started = time.perf_counter()
    with pytest.raises(PathTooBroad) as info:
        path.find(large)
    assert time.perf_counter() - started < 0.5
    assert info.value.path == "$..name"
    assert str(info.value) == "JSONPath $..name would visit more than 100,000 nodes of this context"


def test_nested_descent_is_counted_per_visit_not_per_node() -> None:
    # `..a..b` walks the subtree below every `a` again: quadratic in nested `a`s, so bounded by visits.
    data: dict[str, object] = {}
    for _ in range(500):
        data = {"a": data, "b": 1}
    path = compile_path("$..a..b")
    with pytest.raises(PathTooBroad):
        path.find(data)


def test_paths_only_jsonpath_ng_evaluates_run_on_contexts_within_the_bound() -> None:
    path = compile_path("$.items[0].`parent`")
    assert path.steps is None
    assert path.find({"items": [1, 2]}) == [[1, 2]]
    with pytest.raises(PathTooBroad):
        path.find({"items": list(range(MAX_PATH_NODES))})


@pytest.mark.parametrize(
    ("text", "construct"),
    [("$.body[?(@.x =~ '(a+)+$')]", "the =~ operator"), ("$.body.`sub(/(a+)+$/, b)`", "`sub(/regex/, ...)`")],
)
def test_regular_expressions_inside_jsonpath_are_refused(text: str, construct: str) -> None:
    with pytest.raises(PathError) as info:
        compile_path(text)
    assert str(info.value) == (
        f"JSONPath {text!r} uses {construct}, whose regular expressions can take unbounded time; "
        "use a 'matches' condition (RE2) instead"
    )
