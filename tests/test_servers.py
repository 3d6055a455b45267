"""The session's real servers start, answer, and give each test a database of its own."""

from __future__ import annotations

from tests.servers import PostgresServer


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
