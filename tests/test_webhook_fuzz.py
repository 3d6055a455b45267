"""Random and malformed requests against the running daemon: never a 500, never a crash (hypothesis)."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.harness import Daemon, http, running_daemon

DEFINITIONS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: json
  type: webhook
  webhook:
    endpoint: /hooks/json
    max_body_bytes: 4096
    filter: {action: [opened, closed]}
  agent:
    id: echo
    input_mapping:
      n: {path: "$.body.n", required: true}
      labels: "$.body.labels[*].name"
---
trigger:
  id: signed
  type: webhook
  webhook:
    endpoint: /hooks/signed
    authentication: {type: github, secret: s3cret}
  agent: {id: echo}
---
trigger:
  id: form
  type: webhook
  webhook: {endpoint: /hooks/form, rate_limit: {requests: 1000, per: 1s}}
  agent: {id: echo, input_mapping: {text: $.body.text}}
"""

SEEN: Counter[int | None] = Counter()
# Mostly legal header names (RFC 9110 tchar), sometimes anything printable: most requests should
# get past the HTTP parser, so that the webhook pipeline behind it is what gets fuzzed.
TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
TOKEN = st.one_of(
    st.text(alphabet=TCHAR, min_size=1, max_size=30),
    st.sampled_from(["X-Hub-Signature-256", "Authorization", "X-Forwarded-For", "Transfer-Encoding", "Expect"]),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=30
    ),
)
VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
METHODS = st.sampled_from(
    ["POST"] * 8 + ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND", "BREW", "post", "G E T", ""]
)
PATHS = st.one_of(
    st.sampled_from(["/hooks/json"] * 4 + ["/hooks/form"] * 2 + ["/hooks/signed"] * 2),
    st.sampled_from(
        [
            "/hooks/json",
            "/hooks/signed",
            "/hooks/form",
            "/hooks/json/",
            "//hooks/json",
            "/v1/runs",
            "/v1/triggers/json/fire",
            "/healthz",
            "/metrics",
            "/%2e%2e/etc/passwd",
            "/hooks/json?x=%ff",
            "*",
            "/" + "a" * 5000,
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80).map(
        lambda p: "/" + p
    ),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 4
    + ["application/x-www-form-urlencoded"] * 2
    + [
        "text/plain",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "application/vnd.api+json",
        "",
        "garbage/\x7f",
        "application/json;;;",
    ]
)
BODIES = st.one_of(
    st.binary(max_size=600),
    st.sampled_from(
        [
            b"{",
            b"null",
            b"[]",
            b'{"n": 1, "action": "opened"}',
            b'{"n": 1, "action": "opened"}',
            b'{"n": {"deep": [1, 2]}}',
            b'{"action": "opened"}',
            b"text=hi&text=again&%zz",
            b"\xff\xfe\x00",
            b'"just a string"',
            b'{"labels": [{"name": 1}, 2, null], "n": 0, "action": "closed"}',
            b"1e999999",
        ]
    ),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ).map(lambda v: __import__("json").dumps(v).encode()),
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("fuzz"), DEFINITIONS) as running:
        yield running


def send_raw(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)  # no half-close: a server may take EOF as the client leaving
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    if not response:
        return None  # closed without an answer (a request line it could not parse at all): allowed
    line = response.split(b"\r\n", 1)[0].split()
    assert line[0].startswith(b"HTTP/1."), response[:200]
    return int(line[1])


def request(
    method: str, path: str, content_type: str, body: bytes, headers: list[tuple[str, str]], length: int | None = None
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: fuzz",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body) if length is None else length}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def answered(daemon: Daemon, raw: bytes) -> int | None:
    status = status_of(send_raw(daemon.port, raw))
    SEEN[status] += 1
    assert status is None or status < 500, status
    return status


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(method="POST", path="/hooks/json", content_type="application/json", body=b'{"action": "opened"}', headers=[])
@example(
    method="POST", path="/hooks/json", content_type="application/json", body=b'{"n": 1, "action": "closed"}', headers=[]
)
@example(
    method="POST",
    path="/hooks/signed",
    content_type="application/json",
    body=b"{}",
    headers=[("X-Hub-Signature-256", "sha256=00")],
)
@given(
    method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=PATHS,
    content_type=CONTENT_TYPES,
    body=BODIES,
    headers=st.lists(st.tuples(st.text(alphabet=TCHAR, min_size=1, max_size=30), VALUE), max_size=6),
)
def test_well_formed_requests_with_random_payloads_never_get_a_500(
    daemon: Daemon, method: str, path: str, content_type: str, body: bytes, headers: list[tuple[str, str]]
) -> None:
    answered(daemon, request(method, path, content_type, body, headers))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=METHODS,
    path=PATHS,
    content_type=CONTENT_TYPES,
    body=BODIES,
    headers=st.lists(st.tuples(TOKEN, VALUE), max_size=6),
    short_by=st.integers(min_value=0, max_value=20),
)
def test_malformed_http_never_gets_a_500(
    daemon: Daemon,
    method: str,
    path: str,
    content_type: str,
    body: bytes,
    headers: list[tuple[str, str]],
    short_by: int,
) -> None:
    # Understating the length leaves bytes that read as a second, garbled request.
    answered(daemon, request(method, path, content_type, body, headers, max(len(body) - short_by, 0)))


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=9000, max_value=200_000))
def test_huge_headers_are_refused_not_fatal(daemon: Daemon, size: int) -> None:
    status = answered(daemon, request("POST", "/hooks/json", "application/json", b"{}", [("X-Big", "a" * size)]))
    assert status is None or 400 <= status < 500


def test_the_daemon_survived_and_logged_no_internal_error(daemon: Daemon) -> None:
    # Runs after the fuzzers above (file order): the answers covered the pipeline, not just the parser.
    assert {200, 202, 400, 401, 404, 405, 422}.issubset(SEEN), SEEN
    print(f"fuzz answers: {dict(SEEN)}")
    assert http("GET", daemon.url + "/healthz") == (200, {"status": "ok"})
    assert daemon.process is not None and daemon.process.poll() is None
    internal = [line for line in daemon.log_lines() if line.get("message", "").startswith("internal error")]
    assert internal == []
