"""Clients that try to take the daemon down (SPEC 2.1, 7.1): idle and slow connections beyond the
descriptor limit, bodies nested past the parser, and unsigned floods against a rate limit."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Write, found
from tests.harness import Daemon, http, running_daemon, wait_for, write_config
from triggerd.config.loader import LoadMode, load

SECRET = "gh-secret-for-the-rate-limit-test"
DEFINITIONS = f"""\
agent: {{id: echo, type: command, command: [cat]}}
---
trigger: {{id: raw, type: webhook, webhook: {{}}, agent: {{id: echo}}}}
---
trigger:
  id: signed
  type: webhook
  webhook:
    authentication: {{type: github, secret: "{SECRET}"}}
    rate_limit: {{requests: 2, per: 1m}}
  agent: {{id: echo}}
"""
REQUEST_LINE = b"POST /webhooks/raw HTTP/1.1\r\n"
DEEP = b"[" * 200_000 + b"]" * 200_000  # 400 kB: under max_body_bytes, far past json's nesting


def limit_files(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn setting the child's open-file limits."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def daemon_with_files(root: Path, files: int, hard: int | None = None) -> Iterator[Daemon]:
    """A daemon under an open-file limit of `files` (soft and, unless given, hard: raising gains nothing)."""
    port = write_config(root, DEFINITIONS)
    daemon = Daemon(root, port, {"PATH": os.environ["PATH"]}, preexec=limit_files(files, hard or files)).start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


@contextmanager
def own_files(needed: int) -> Iterator[None]:
    """This test process's soft open-file limit raised to hold `needed` sockets of its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open-file limit {hard} is below the {needed} this test holds")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(port: int, count: int, budget: float = 60.0) -> list[socket.socket]:
    """`count` connections that each send one request line and then nothing (within `budget` s)."""
    sockets, deadline = [], time.monotonic() + budget
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(REQUEST_LINE)
        except OSError:
            sock.close()
            continue
        sockets.append(sock)
    return sockets


def closed_by_server(sockets: list[socket.socket]) -> int:
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def out_of_descriptor_lines(daemon: Daemon) -> int:
    # asyncio's own line ("socket.accept() out of system resource") and triggerd's report alike.
    text = daemon.log.read_text()
    return sum("out of system resource" in line or "out of file descriptors" in line for line in text.splitlines())


def timed(call: Callable[[], tuple[int, object]]) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = call()
    return status, time.monotonic() - started


def test_the_daemon_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    with daemon_with_files(tmp_path, 256, hard=2048) as daemon:
        assert daemon.process is not None
        limits = Path(f"/proc/{daemon.process.pid}/limits").read_text()
        max_open = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert max_open.split()[3:5] == ["2048", "2048"]  # soft, hard
        assert "open-file limit raised from 256 to the hard limit 2048" in [m["message"] for m in daemon.log_lines()]


def test_idle_connections_past_the_descriptor_limit_leave_the_daemon_answering(tmp_path: Path) -> None:
    # read_timeout keeps its default (30 s): only the connection cap can answer within 10 s.
    with own_files(4096), daemon_with_files(tmp_path, 1024) as daemon:
        idle = open_idle(daemon.port, 1100)
        try:
            assert len(idle) == 1100, "the daemon stopped accepting connections"
            status, seconds = timed(lambda: http("GET", daemon.url + "/healthz"))
            assert status == 200 and seconds < 10, seconds
            status, seconds = timed(lambda: http("POST", daemon.url + "/webhooks/raw", {"n": 1}))
            assert status == 202 and seconds < 10, seconds
            # The oldest idle connections made room; with 1024 descriptors at most 512 stay open.
            assert closed_by_server(idle) >= 1100 - 512
        finally:
            for sock in idle:
                sock.close()
        assert out_of_descriptor_lines(daemon) == 0  # the cap kept accept() from failing at all
        assert not [line for line in daemon.log_lines() if "exception" in line]


def test_running_out_of_descriptors_is_logged_once_per_interval(tmp_path: Path) -> None:
    # 64 descriptors leave a cap of 32 connections and about a dozen spare. While the daemon is
    # stopped, 120 connections queue in its backlog; resumed, it accepts them all in one loop pass,
    # before any is counted, so accept() runs out of descriptors for certain.
    with own_files(1024), daemon_with_files(tmp_path, 64) as daemon:
        assert daemon.process is not None
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            idle = open_idle(daemon.port, 120)  # under the backlog of 128: every connect completes
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        try:
            assert len(idle) == 120
            assert http("GET", daemon.url + "/healthz")[0] == 200
            assert http("POST", daemon.url + "/webhooks/raw", {"n": 1})[0] == 202
        finally:
            for sock in idle:
                sock.close()
        elapsed = time.monotonic() - started
        lines = out_of_descriptor_lines(daemon)
        # The failure path ran, and was reported once per 10 s interval, not once per accept().
        assert 1 <= lines <= 2 + elapsed / 10, (lines, elapsed)

        def suppressed() -> int:
            reports = [line for line in daemon.log_lines() if "out of file descriptors" in line["message"]]
            return sum(line.get("suppressed", 0) for line in reports)

        # The end of the interval reports how many failures it held back.
        assert wait_for(suppressed, timeout=15, what="a report of the failures held back") > 0


def read_response(sock: socket.socket) -> int:
    """The status of one response read off a keep-alive connection (its body consumed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection instead of answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1])


def seconds_until_closed(sock: socket.socket, since: float, limit: float = 15.0) -> float:
    """Seconds from `since` until the server closes `sock` (reads EOF); fails when it stays open."""
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {limit}s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - since


def test_slow_and_idle_clients_are_closed_after_their_timeouts(tmp_path: Path) -> None:
    server = '  read_timeout: "2s"\n  keepalive_timeout: "5s"\n'
    with running_daemon(tmp_path, DEFINITIONS, server=server) as daemon:

        def connect(*parts: bytes) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
            for part in parts:
                sock.sendall(part)
            return sock

        started = time.monotonic()
        silent = connect()
        request_line = connect(REQUEST_LINE)
        slow_body = connect(b"POST /webhooks/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        with silent, request_line, slow_body:
            for sock in (silent, request_line, slow_body):
                assert 1.9 < seconds_until_closed(sock, started) < 10

        # A request that arrives in parts within read_timeout is answered; an idle keep-alive
        # connection then waits for the next request past read_timeout, up to keepalive_timeout.
        with connect(b"GET /healthz HTTP/1.1\r\n") as kept:
            time.sleep(0.4)
            kept.sendall(b"Host: x\r\n\r\n")
            assert read_response(kept) == 200
            time.sleep(2.5)
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(kept) == 200
            assert 4.9 < seconds_until_closed(kept, time.monotonic()) < 12
        assert http("GET", daemon.url + "/healthz")[0] == 200
        assert not [line for line in daemon.log_lines() if "exception" in line]


def test_a_zero_timeout_is_a_problem_at_its_line(write: Write) -> None:
    path = write("triggerd.yaml", 'server:\n  listen: "127.0.0.1:8080"\n  read_timeout: 0\n  keepalive_timeout: 5m\n')
    assert [p for p in found(load(path, mode=LoadMode.VALIDATE, env={})) if p[2] == "error"] == [
        (str(path), 3, "error", "must be longer than 0s: 0 would close every connection at once")
    ]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("hostile"), DEFINITIONS) as running:
        yield running


@pytest.mark.parametrize(
    ("content_type", "raw", "headers"),
    [
        ("application/json", DEEP, {}),
        ("application/json", b'{"a": "\xff"}', {}),
        ("application/x-www-form-urlencoded", b"a=\xff", {}),
        ("application/x-www-form-urlencoded", b"a=%ff", {}),
        ("application/json", b"not gzip", {"Content-Encoding": "gzip"}),
    ],
    ids=["200000-deep", "json-not-utf8", "form-not-utf8", "form-percent-not-utf8", "broken-gzip"],
)
def test_a_body_that_does_not_parse_is_a_400(
    daemon: Daemon, content_type: str, raw: bytes, headers: dict[str, str]
) -> None:
    status, answer = http(
        "POST", daemon.url + "/webhooks/raw", raw=raw, headers={"Content-Type": content_type, **headers}
    )
    assert status == 400 and "error" in answer, answer
    assert not [line for line in daemon.log_lines() if "exception" in line]


def test_a_good_gzip_body_still_parses(daemon: Daemon) -> None:
    headers = {"Content-Encoding": "gzip"}
    assert http("POST", daemon.url + "/webhooks/raw", raw=gzip.compress(b'{"n": 1}'), headers=headers)[0] == 202


@pytest.mark.parametrize("path", ["/v1/events", "/v1/triggers/raw/fire"])
def test_a_200000_deep_body_to_the_admin_api_is_a_400(daemon: Daemon, path: str) -> None:
    status, answer = http("POST", daemon.url + path, raw=DEEP)
    assert (status, answer) == (400, {"error": "the body is not valid JSON"})
    assert not [line for line in daemon.log_lines() if "exception" in line]


def test_unsigned_requests_do_not_spend_a_signed_senders_rate_limit(daemon: Daemon) -> None:
    for _ in range(5):
        assert http("POST", daemon.url + "/webhooks/signed", {"forged": True})[0] == 401
    body = json.dumps({"real": True}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "delivery-1"}
    assert http("POST", daemon.url + "/webhooks/signed", raw=body, headers=headers)[0] == 202
