"""The OpenAPI 3.1 description of the admin API, served at GET /v1/openapi.json (SPEC 7.2).

It describes what triggerd/http/admin.py implements; tests/test_openapi.py runs schemathesis
against a live daemon from this description, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from triggerd import __version__
from triggerd.runs import RunStatus

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERRORS = {
    "400": _body(_ref("Error"), "The request is malformed (JSON, a parameter, a field)"),
    "401": _body(_ref("Error"), "A valid admin token is required"),
    "403": _body(_ref("Error"), "Without admin tokens, only loopback clients are answered"),
    "404": _body(_ref("Error"), "No such trigger or run"),
    "405": _body(_ref("Error"), "Method not allowed"),
    "413": _body(_ref("Error"), "Body too large"),
    "503": _body(_ref("Error"), "Store unavailable, draining for shutdown, or an internal error (never a 500)"),
    "409": _body(_ref("Error"), "The run's state forbids it, or the trigger's agent is gone"),
    "422": _body(_ref("Reload"), "The new configuration was rejected; the running one stays"),
}
RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
TRIGGER_ID = {"name": "trigger_id", "in": "path", "required": True, "schema": {"type": "string"}}
PAGE = [
    {"name": "status", "in": "query", "schema": {"enum": [str(s) for s in RunStatus]}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
    {
        "name": "before",
        "in": "query",
        "schema": {"type": "string"},
        "description": "A run id, or an RFC 3339 instant: only older runs",
    },
]


def _operation(summary: str, ok: str, ok_body: dict[str, Any], *errors: str, **extra: Any) -> dict[str, Any]:
    codes = ("400", "401", "403", "405", "413", "503", *errors)
    responses = {ok: _body(ok_body, summary), **{code: ERRORS[code] for code in sorted(set(codes))}}
    return {"summary": summary, "responses": responses, **extra}


def openapi() -> dict[str, Any]:
    nullable_string = {"type": ["string", "null"]}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "DeadMessage": {
            "type": "object",
            "required": ["id", "source_id", "reason", "payload", "headers", "broker_id", "received_at"],
            "properties": {
                "id": {"type": "string"},
                "source_id": {"type": "string"},
                "reason": {"type": "string"},
                "payload": {
                    "type": "string",
                    "description": "The raw body as UTF-8 (invalid bytes replaced), cut at 64 KiB",
                },
                "headers": {"type": "object"},
                "broker_id": {"type": "string"},
                "received_at": {"type": "string"},
            },
        },
        "SourceState": {
            "type": "object",
            "required": ["id", "type", "target", "state", "since", "last_error", "messages", "in_flight", "lag"],
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "target": {"type": "string"},
                "state": {"enum": ["connecting", "consuming", "down", "stopped"]},
                "since": {"type": "string"},
                "last_error": nullable_string,
                "messages": {"type": "object", "additionalProperties": {"type": "integer"}},
                "in_flight": {"type": "integer"},
                "lag": {"type": ["integer", "null"]},
            },
        },
        "Instance": {
            "type": "object",
            "required": ["id", "address", "started", "last_seen", "fingerprint"],
            "properties": {
                "id": {"type": "string"},
                "address": {"type": "string"},
                "started": {"type": "string", "format": "date-time"},
                "last_seen": {"type": "string", "format": "date-time"},
                "fingerprint": {"type": "string", "description": "Of the daemon's loaded definitions"},
            },
        },
        "Attempt": {
            "type": "object",
            "required": ["number", "started_at", "status"],
            "properties": {
                "number": {"type": "integer"},
                "started_at": {"type": "string"},
                "finished_at": nullable_string,
                "status": {"type": "string"},
                "error": nullable_string,
            },
        },
        "Step": {
            "type": "object",
            "required": ["attempt", "turn", "tool", "input", "started_at"],
            "properties": {
                "attempt": {"type": "integer"},
                "turn": {"type": "integer", "description": "The model call that asked for this tool call"},
                "tool": {"type": "string", "description": "The tool agent's id"},
                "input": {},
                "output": {"description": "The tool's output; absent when it failed"},
                "error": {"type": "string", "description": "Why it failed (sent to the model as an is_error result)"},
                "started_at": {"type": "string"},
                "finished_at": nullable_string,
            },
        },
        "Run": {
            "type": "object",
            "required": ["id", "trigger_id", "agent_id", "status", "attempts", "steps", "source", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "trigger_id": {"type": "string"},
                "agent_id": {"type": "string"},
                "status": {"enum": [str(s) for s in RunStatus]},
                "reason": nullable_string,
                "input": {},
                "output": {},
                "error": nullable_string,
                "attempts": {"type": "array", "items": _ref("Attempt")},
                "usage": {"description": "Anthropic tokens, summed over every model call of the last attempt"},
                "steps": {
                    "type": "array",
                    "description": "The tool calls of an anthropic agent with tools (SPEC 5.1), every attempt's",
                    "items": _ref("Step"),
                },
                "source": {"enum": ["webhook", "schedule", "event", "manual", "replay"]},
                "nominal_time": nullable_string,
                "idempotency_key": nullable_string,
                "replay_of": nullable_string,
                "chain_depth": {"type": "integer"},
                "dead_letter": {"type": "boolean"},
                "created_at": {"type": "string"},
                "started_at": nullable_string,
                "finished_at": nullable_string,
            },
        },
        "RunPage": {
            "type": "object",
            "required": ["runs", "next_before"],
            "properties": {"runs": {"type": "array", "items": _ref("Run")}, "next_before": nullable_string},
        },
        "Trigger": {
            "type": "object",
            "required": ["id", "type", "enabled", "agent_id", "state"],
            "properties": {
                "id": {"type": "string"},
                "name": nullable_string,
                "description": nullable_string,
                "type": {"enum": ["schedule", "webhook", "event"]},
                "enabled": {"type": "boolean"},
                "paused": {"type": "boolean", "description": "Paused by POST .../pause (SPEC 12), until resumed"},
                "paused_at": nullable_string,
                "agent_id": {"type": "string"},
                "source_file": {"type": "string"},
                "flow": {
                    "type": "object",
                    "description": "Flow control as configured (SPEC 12): concurrency_key, debounce, throttle, budget",
                },
                "groups": {
                    "type": "object",
                    "description": "The flow-control groups asked for: running, pending, next_due, started",
                },
                "spend": {
                    "type": "object",
                    "description": "GET of one trigger only: the trigger's (and a budgeted agent's) spend",
                    "additionalProperties": _ref("Spend"),
                },
                "schedule": {"type": "object"},
                "webhook": {"type": "object"},
                "event": {"type": "object"},
                "state": {
                    "type": "object",
                    "required": ["runs", "last_run"],
                    "properties": {
                        "runs": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "last_run": {"type": ["object", "null"]},
                    },
                },
            },
        },
        "Spend": {
            "type": "object",
            "required": ["tokens_per_day", "runs_per_hour"],
            "properties": {
                "tokens_per_day": {"type": "integer", "description": "Anthropic tokens of runs created in 24 hours"},
                "runs_per_hour": {"type": "integer", "description": "Runs not skipped created in the last hour"},
            },
        },
        "Pause": {
            "type": "object",
            "required": ["trigger_id", "paused", "paused_at"],
            "properties": {
                "trigger_id": {"type": "string"},
                "paused": {"type": "boolean"},
                "paused_at": nullable_string,
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["run_id", "trigger_id", "status"],
            "properties": {
                "run_id": {"type": "string"},
                "trigger_id": {"type": "string"},
                "status": {"enum": ["pending", "skipped"]},
                "replay_of": {"type": "string"},
            },
        },
        "Event": {
            "type": "object",
            "description": "triggerd's form; with specversion, a structured CloudEvent (id and source then required)",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "minLength": 1, "maxLength": 256},
                "source": {"type": "string", "maxLength": 256},
                "id": {"type": "string"},
                "time": {"type": "string", "format": "date-time"},
                "severity": {"type": "string"},
                "specversion": {"const": "1.0"},
                "data": {},
            },
        },
        "CloudEvent": {
            "type": "object",
            "description": "CloudEvents 1.0 JSON format; data_base64 is decoded as datacontenttype says",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "minLength": 1},
                "source": {"type": "string", "minLength": 1, "maxLength": 256},
                "type": {"type": "string", "minLength": 1, "maxLength": 256},
                "time": {"type": "string", "format": "date-time"},
                "severity": {"type": "string"},
                "datacontenttype": {"type": "string"},
                "data": {},
                "data_base64": {"type": "string", "contentEncoding": "base64"},
            },
        },
        "Published": {
            "type": "object",
            "required": ["event_ids", "matched", "run_ids"],
            "properties": {
                "event_ids": {"type": "array", "items": {"type": "string"}},
                "matched": {"type": "array", "items": {"type": "string"}},
                "run_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Reload": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"enum": ["reloaded", "rejected"]},
                "problems": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Problem": {
            "type": "object",
            "required": ["file", "line", "column", "severity", "message", "pointer"],
            "properties": {
                "file": {"type": "string"},
                "line": {"type": "integer", "minimum": 1},
                "column": {"type": "integer", "minimum": 1},
                "severity": {"enum": ["error", "warning"]},
                "message": {"type": "string"},
                "pointer": {"type": "string", "description": "JSON Pointer into the document; empty for the whole"},
            },
        },
        "Config": {
            "type": "object",
            "required": ["applied_at", "settings_file", "files", "problems", "reloads", "last_reload"],
            "properties": {
                "applied_at": {"type": "string", "format": "date-time"},
                "settings_file": nullable_string,
                "files": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["file", "sha256", "triggers", "agents", "errors", "warnings"],
                        "properties": {
                            "file": {"type": "string"},
                            "sha256": {"type": ["string", "null"], "description": "null: the file could not be read"},
                            "triggers": {"type": "array", "items": {"type": "string"}},
                            "agents": {"type": "array", "items": {"type": "string"}},
                            "errors": {"type": "integer", "minimum": 0},
                            "warnings": {"type": "integer", "minimum": 0},
                        },
                    },
                },
                "problems": {"type": "array", "items": _ref("Problem")},
                "reloads": {
                    "type": "object",
                    "required": ["applied", "rejected"],
                    "properties": {"applied": {"type": "integer"}, "rejected": {"type": "integer"}},
                },
                "last_reload": {
                    "type": ["object", "null"],
                    "required": ["at", "reason", "status", "problems"],
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string"},
                        "status": {"enum": ["reloaded", "rejected"]},
                        "problems": {"type": "array", "items": _ref("Problem")},
                    },
                },
            },
        },
    }
    fire_body = {
        "required": False,
        "content": {JSON: {"schema": {"type": "object", "properties": {"input": {"type": "object"}}}}},
    }
    events_body = {
        "required": True,
        "description": "triggerd's form, or CloudEvents 1.0 structured or batch; with ce- headers (binary mode) "
        "the body of any media type is the event's data",
        "content": {
            JSON: {
                "schema": {
                    "oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event"), "minItems": 1, "maxItems": 1000}]
                }
            },
            "application/cloudevents+json": {"schema": _ref("CloudEvent")},
            "application/cloudevents-batch+json": {
                "schema": {"type": "array", "items": _ref("CloudEvent"), "minItems": 1, "maxItems": 1000}
            },
        },
    }
    # CloudEvents binary mode: the attributes travel as headers, the body is the data.
    binary_mode = [
        {
            "name": f"ce-{name}",
            "in": "header",
            "required": False,
            "schema": {"type": "string", **({"maxLength": 256} if name in ("type", "source") else {})},
            "description": description,
        }
        for name, description in (
            ("specversion", "binary mode: 1.0; with ce-type, ce-source and ce-id required"),
            ("type", "binary mode: the event type"),
            ("source", "binary mode: the event source"),
            ("id", "binary mode: the event id"),
            ("time", "binary mode: RFC 3339 instant"),
            ("severity", "binary mode: the severity extension"),
        )
    ]
    paths: dict[str, Any] = {
        "/v1/triggers": {
            "get": _operation(
                "Every trigger with its state",
                "200",
                {
                    "type": "object",
                    "required": ["triggers"],
                    "properties": {"triggers": {"type": "array", "items": _ref("Trigger")}},
                },
            )
        },
        "/v1/triggers/{trigger_id}": {
            "parameters": [TRIGGER_ID],
            "get": _operation(
                "One trigger with its state",
                "200",
                _ref("Trigger"),
                "404",
                parameters=[
                    {
                        "name": f"{kind}_key",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": f"A {kind} group (its key's value as JSON): its state is shown under groups",
                    }
                    for kind in ("concurrency", "throttle", "debounce")
                ],
            ),
        },
        "/v1/triggers/{trigger_id}/fire": {
            "parameters": [TRIGGER_ID],
            "post": _operation(
                "Fire a trigger by hand (any type, even disabled)",
                "202",
                _ref("Accepted"),
                "404",
                "409",
                requestBody=fire_body,
            ),
        },
        "/v1/triggers/{trigger_id}/pause": {
            "parameters": [TRIGGER_ID],
            "post": _operation(
                "Pause a trigger: webhooks answer 503, schedule slots are skipped, events do not match (stored)",
                "200",
                _ref("Pause"),
                "404",
            ),
        },
        "/v1/triggers/{trigger_id}/resume": {
            "parameters": [TRIGGER_ID],
            "post": _operation("Resume a paused trigger (a 200 too if it was not paused)", "200", _ref("Pause"), "404"),
        },
        "/v1/triggers/{trigger_id}/executions": {
            "parameters": [TRIGGER_ID],
            "get": _operation("Runs of a trigger, newest first", "200", _ref("RunPage"), "404", parameters=PAGE),
        },
        "/v1/triggers/{trigger_id}/executions/{run_id}": {
            "parameters": [TRIGGER_ID, RUN_ID],
            "get": _operation("One run of a trigger", "200", _ref("Run"), "404"),
        },
        "/v1/triggers/{trigger_id}/executions/{run_id}/cancel": {
            "parameters": [TRIGGER_ID, RUN_ID],
            "post": _operation("Cancel a pending or running run", "200", _ref("Run"), "404", "409"),
        },
        "/v1/runs": {
            "get": _operation(
                "Runs, newest first",
                "200",
                _ref("RunPage"),
                parameters=[{"name": "trigger", "in": "query", "schema": {"type": "string"}}, *PAGE],
            )
        },
        "/v1/runs/{run_id}": {"parameters": [RUN_ID], "get": _operation("One run", "200", _ref("Run"), "404")},
        "/v1/runs/{run_id}/cancel": {
            "parameters": [RUN_ID],
            "post": _operation("Cancel a pending or running run", "200", _ref("Run"), "404", "409"),
        },
        "/v1/runs/{run_id}/replay": {
            "parameters": [RUN_ID],
            "post": _operation("A new run with the same input", "202", _ref("Accepted"), "404", "409"),
        },
        "/v1/dead-letters": {
            "get": _operation(
                "Final failures not yet replayed, and broker messages that could not become events (SPEC 5.4)",
                "200",
                {
                    "type": "object",
                    "required": ["runs", "messages"],
                    "properties": {
                        "runs": {"type": "array", "items": _ref("Run")},
                        "messages": {"type": "array", "items": _ref("DeadMessage")},
                    },
                },
                parameters=PAGE,
            )
        },
        "/v1/sources": {
            "get": _operation(
                "Each source's state (SPEC 5.4)",
                "200",
                {
                    "type": "object",
                    "required": ["sources"],
                    "properties": {"sources": {"type": "array", "items": _ref("SourceState")}},
                },
            )
        },
        "/v1/events": {
            "post": _operation(
                "Publish events; answered once they and their runs are committed",
                "202",
                _ref("Published"),
                requestBody=events_body,
                parameters=binary_mode,
            )
        },
        "/v1/reload": {"post": _operation("Reload the configuration now", "200", _ref("Reload"), "422")},
        "/v1/config": {
            "get": _operation(
                "The running configuration: its files, the problems of what it left out, when it was applied",
                "200",
                _ref("Config"),
            )
        },
        "/v1/instances": {
            "get": _operation(
                "The daemons sharing the store (SPEC 10): id, address, started, last seen",
                "200",
                {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {"instances": {"type": "array", "items": _ref("Instance")}},
                },
            )
        },
        "/v1/openapi.json": {"get": _operation("This description", "200", {"type": "object"})},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "triggerd admin API",
            "version": __version__,
            "description": "Triggers, runs, events and reloads of a running triggerd (SPEC 7.2).",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
    }
