"""POST /v1/events through the running daemon: CloudEvents in every HTTP mode, and triggerd's own form (SPEC 5.3)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Daemon, http, running_daemon

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: orders
  type: event
  event: {pattern: "com.example.order.*"}
  agent:
    id: echo
    input_mapping:
      id: $.event.id
      type: $.event.type
      source: $.event.source
      time: $.event.time
      severity: $.event.severity
      data: $.event.data
"""
ORDER = {"type": "decoy.not.the.event", "order": 42, "lines": [{"sku": "A-1", "qty": 2}]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("cloudevents"), DEFS) as running:
        yield running


def post(daemon: Daemon, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    return http("POST", daemon.url + "/v1/events", raw=body, headers=headers)


def binary_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-type": "com.example.order.created",
        "ce-source": "/shop/eu",
        "ce-id": "A234-1234-1234",
        "ce-time": "2026-11-30T08:00:00+01:00",
        "ce-severity": "high",
        "ce-subject": "order-42",  # an extension triggerd has no place for: ignored
    }
    return {**headers, **overrides}


def fired_input(daemon: Daemon, answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["matched"] == ["orders"], answer
    (run_id,) = answer["run_ids"]
    run = daemon.wait_run(run_id)
    assert run["status"] == "completed", run
    return dict(run["input"])


def test_binary_mode_takes_attributes_from_headers_and_the_body_as_data(daemon: Daemon) -> None:
    """A data field called `type` stays data: the event is the one ce-type names."""
    status, answer = post(daemon, json.dumps(ORDER).encode(), binary_headers())
    assert status == 202, answer
    assert answer["event_ids"] == ["A234-1234-1234"]
    assert fired_input(daemon, answer) == {
        "id": "A234-1234-1234",
        "type": "com.example.order.created",
        "source": "/shop/eu",
        "time": "2026-11-30T07:00:00.000Z",
        "severity": "high",
        "data": ORDER,
    }


def test_binary_mode_text_data_stays_text_and_headers_are_percent_decoded(daemon: Daemon) -> None:
    headers = binary_headers(**{"Content-Type": "text/plain; charset=utf-8", "ce-id": "t-1", "ce-source": "/caf%C3%A9"})
    del headers["ce-time"], headers["ce-severity"]  # both optional
    status, answer = post(daemon, b"type=order.cancelled\n", headers)
    assert status == 202, answer
    seen = fired_input(daemon, answer)
    assert (seen["type"], seen["source"], seen["data"], seen["severity"]) == (
        "com.example.order.created",
        "/café",
        "type=order.cancelled\n",
        None,
    )


def test_structured_mode_by_content_type_or_by_specversion(daemon: Daemon) -> None:
    event = {
        "specversion": "1.0",
        "type": "com.example.order.paid",
        "source": "/shop/us",
        "id": "s-1",
        "datacontenttype": "application/json",
        "data": ORDER,
    }
    status, answer = post(daemon, json.dumps(event).encode(), {"Content-Type": "application/cloudevents+json"})
    assert status == 202, answer
    assert answer["event_ids"] == ["s-1"]
    assert fired_input(daemon, answer)["data"] == ORDER
    encoded = {**event, "id": "s-2", "data_base64": base64.b64encode(json.dumps(ORDER).encode()).decode()}
    del encoded["data"]
    status, answer = post(daemon, json.dumps(encoded).encode(), {"Content-Type": "application/json"})
    assert status == 202, answer
    assert (answer["event_ids"], fired_input(daemon, answer)["data"]) == (["s-2"], ORDER)


def test_batch_mode_is_an_array_of_structured_events(daemon: Daemon) -> None:
    batch = [
        {"specversion": "1.0", "type": f"com.example.order.{kind}", "source": "/shop", "id": f"b-{kind}", "data": n}
        for n, kind in enumerate(["created", "shipped"])
    ]
    status, answer = post(daemon, json.dumps(batch).encode(), {"Content-Type": "application/cloudevents-batch+json"})
    assert status == 202, answer
    assert answer["event_ids"] == ["b-created", "b-shipped"]
    runs = [daemon.wait_run(run_id)["input"] for run_id in answer["run_ids"]]
    assert sorted((r["type"], r["data"]) for r in runs) == [
        ("com.example.order.created", 0),
        ("com.example.order.shipped", 1),
    ]


def test_triggerds_own_form_still_works(daemon: Daemon) -> None:
    one = {"type": "com.example.order.refunded", "source": "billing", "severity": "low", "data": {"n": 1}}
    status, answer = post(daemon, json.dumps([one, {"type": "other"}]).encode(), {"Content-Type": "application/json"})
    assert status == 202, answer
    assert answer["matched"] == ["orders"] and len(answer["event_ids"]) == 2
    assert daemon.wait_run(answer["run_ids"][0])["input"]["source"] == "billing"


LONG = "x" * 257
BINARY = "binary-mode CloudEvent"
STRUCTURED = {"specversion": "1.0", "type": "com.example.order.created", "source": "/shop", "id": "e-1"}


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        # binary mode with attributes missing: the body is not consulted for them
        (
            json.dumps({"type": "a", "source": "b", "id": "c"}).encode(),
            {"ce-specversion": "1.0", "ce-source": "/s"},
            "binary-mode CloudEvent: missing header(s) ce-type, ce-id",
        ),
        (b"{}", binary_headers(**{"ce-specversion": "0.3"}), f"{BINARY}: only CloudEvents specversion 1.0"),
        (b"{", binary_headers(), f"{BINARY}: the data (application/json) is not valid JSON"),
        (b"\xff\xfe", binary_headers(**{"Content-Type": "application/octet-stream"}), f"{BINARY}: the data"),
        (b"{}", binary_headers(**{"ce-type": LONG}), f"{BINARY}: 'type' is longer than 256 characters"),
        (b"{}", binary_headers(**{"ce-source": LONG}), f"{BINARY}: 'source' is longer than 256 characters"),
        # a JSON object with no type fits no mode
        (b'{"source": "x", "data": {}}', {}, "event 0: 'type' is required and must be a non-empty string"),
        # structured and batch
        (
            json.dumps({"specversion": "1.0", "type": "t"}).encode(),
            {"Content-Type": "application/cloudevents+json"},
            "event 0: a CloudEvent needs id, source and type; missing or empty: 'id', 'source'",
        ),
        (b'{"type": "t"}', {"Content-Type": "application/cloudevents+json"}, "event 0: a structured CloudEvent needs"),
        (
            json.dumps([STRUCTURED]).encode(),
            {"Content-Type": "application/cloudevents+json"},
            "a structured CloudEvent (application/cloudevents+json) is one JSON object",
        ),
        (
            json.dumps(STRUCTURED).encode(),
            {"Content-Type": "application/cloudevents-batch+json"},
            "a batch (application/cloudevents-batch+json) is a JSON array",
        ),
        (
            json.dumps([STRUCTURED, {"type": "t"}]).encode(),
            {"Content-Type": "application/cloudevents-batch+json"},
            "event 1: a CloudEvent in a batch needs 'specversion'",
        ),
        (
            json.dumps({**STRUCTURED, "type": LONG}).encode(),
            {"Content-Type": "application/cloudevents+json"},
            "event 0: 'type' is longer than 256 characters",
        ),
        (
            json.dumps([STRUCTURED, {**STRUCTURED, "source": LONG}]).encode(),
            {"Content-Type": "application/cloudevents-batch+json"},
            "event 1: 'source' is longer than 256 characters",
        ),
        (
            json.dumps({**STRUCTURED, "data_base64": "e30=", "datacontenttype": 7}).encode(),
            {},
            "event 0: 'datacontenttype' must be a string",
        ),
        (
            json.dumps({**STRUCTURED, "data_base64": "not base64!"}).encode(),
            {},
            "event 0: 'data_base64' is not base64",
        ),
        (json.dumps({"type": LONG}).encode(), {}, "event 0: 'type' is longer than 256 characters"),
        (json.dumps({"type": "t", "source": LONG}).encode(), {}, "event 0: 'source' is longer than 256 characters"),
        (b"[" * 100_000, {}, "the body is not valid JSON"),
    ],
)
def test_a_request_that_fits_no_mode_is_a_400_naming_what_is_missing(
    daemon: Daemon, body: bytes, headers: dict[str, str], message: str
) -> None:
    before = daemon.request("GET", "/v1/runs?trigger=orders")[1]["runs"]
    status, answer = post(daemon, body, {"Content-Type": "application/json", **headers})
    assert status == 400, answer
    assert answer["error"].startswith(message), answer["error"]
    assert daemon.request("GET", "/v1/runs?trigger=orders")[1]["runs"] == before  # nothing was published


def test_type_and_source_of_exactly_256_characters_are_accepted(daemon: Daemon) -> None:
    longest = "com.example.order." + "y" * (256 - len("com.example.order."))
    status, answer = post(daemon, b"{}", binary_headers(**{"ce-type": longest, "ce-source": "s" * 256, "ce-id": "m"}))
    assert status == 202, answer
    assert fired_input(daemon, answer)["type"] == longest
