"""bench/soak.py, short: webhooks, events, schedules and a Redis stream source while the daemon is
SIGKILLed; nothing lost or doubled.

On SQLite, and on a PostgreSQL server the script starts itself (bench/postgres.py), its
accounting then reading the database with psycopg.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from bench.postgres import postgres_bin
from tests.conftest import REPO
from tests.servers import unavailable


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_short_soak_loses_and_duplicates_nothing(store: str) -> None:
    if store == "postgresql" and postgres_bin() is None:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    short = ["--seconds", "12", "--rate", "30", "--event-rate", "10", "--seed", "2"]
    stream = shutil.which("redis-server") is not None  # the broker tests need it too (.ci/run installs it)
    if not stream:
        short += ["--stream-rate", "0"]
    soak = subprocess.run(
        [sys.executable, "bench/soak.py", *short, "--store", store],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert soak.returncode == 0, soak.stdout + soak.stderr
    counts = dict(re.findall(r"^  ([a-z ]+): (\d+)$", soak.stdout, re.MULTILINE))
    assert int(re.search(r"(\d+) SIGKILLs", soak.stdout)[1]) >= 1  # type: ignore[index]
    assert int(counts["webhooks accepted"]) >= 300
    assert int(counts["events accepted"]) >= 50
    if stream:
        assert int(counts["stream messages added"]) >= 150  # each with exactly one run: lost, duplicated
    assert (counts["lost"], counts["duplicated"], counts["mismatched"], counts["not final"]) == ("0", "0", "0", "0")
