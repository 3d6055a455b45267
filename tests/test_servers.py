"""The session's real servers start, answer, and give each test a database of its own."""

from __future__ import annotations

import socket

import pytest

from tests.servers import BrokerServer, PostgresServer


def _psql(server: PostgresServer, url: str, sql: str) -> str:
    proc = server.run(str(server.bin / "psql"), url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_postgres_gives_each_test_an_empty_database(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert _psql(postgres_server, postgres_url, "SELECT current_user") == "triggerd"
    _psql(postgres_server, postgres_url, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
    other = postgres_server.database()
    assert other != postgres_url
    assert _psql(postgres_server, other, "SELECT count(*) FROM pg_tables WHERE tablename = 't'") == "0"
    assert _psql(postgres_server, postgres_url, "SELECT x FROM t") == "7"


def test_postgres_listens_on_loopback_only(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert _psql(postgres_server, postgres_url, "SHOW listen_addresses") == "127.0.0.1"


def _exchange(port: int, send: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if send:
            sock.sendall(send)
        return sock.recv(64)


def test_redis_answers_and_survives_a_restart_with_its_data(redis_server: BrokerServer) -> None:
    assert _exchange(redis_server.port, b"SET k kept\r\n") == b"+OK\r\n"
    redis_server.stop()
    assert not redis_server.running
    with pytest.raises(OSError):
        _exchange(redis_server.port, b"PING\r\n")
    redis_server.start()
    assert _exchange(redis_server.port, b"GET k\r\n") == b"$4\r\nkept\r\n"


def test_nats_answers_with_jetstream(nats_server: BrokerServer) -> None:
    info = _exchange(nats_server.port, b"")
    assert info.startswith(b"INFO ")


def test_rabbitmq_speaks_amqp_0_9_1(rabbitmq_server: BrokerServer) -> None:
    frame = _exchange(rabbitmq_server.port, b"AMQP\x00\x00\x09\x01")
    assert frame[:1] == b"\x01"  # a method frame: connection.start
    assert frame[7:11] == b"\x00\x0a\x00\x0a"  # class 10 (connection), method 10 (start)
