"""bench/soak.py, short: webhooks, events and schedules while the daemon is SIGKILLed; nothing lost or doubled."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_a_short_soak_loses_and_duplicates_nothing() -> None:
    soak = subprocess.run(
        [sys.executable, "bench/soak.py", "--seconds", "12", "--rate", "30", "--event-rate", "10", "--seed", "2"],
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
    assert (counts["lost"], counts["duplicated"], counts["mismatched"], counts["not final"]) == ("0", "0", "0", "0")
