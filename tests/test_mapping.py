"""JSONPath compilation and `{{ dotted.path }}` templates (SPEC 5.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd.errors import PathError, TemplateError
from triggerd.mapping import Template, compile_path


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
STEPS = st.lists(
    st.one_of(st.sampled_from(["a", "b", "x-y", "0", "*"]), st.integers(min_value=0, max_value=3)), max_size=4
)


@settings(max_examples=400, deadline=None)
@given(data=JSON, steps=STEPS)
def test_the_plain_path_shortcut_agrees_with_jsonpath_ng(data: object, steps: list[str | int]) -> None:
    text = "$" + "".join(f"[{s}]" if isinstance(s, int) or s == "*" else f"['{s}']" for s in steps)
    fast = compile_path(text)
    assert fast.steps == tuple(None if s == "*" else s for s in steps)
    assert fast.find(data) == [m.value for m in fast.expression.find(data)]
