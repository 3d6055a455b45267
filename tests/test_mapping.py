"""JSONPath compilation and `{{ dotted.path }}` templates (SPEC 5.1)."""

from __future__ import annotations

import pytest

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
