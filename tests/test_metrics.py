"""GET /metrics (SPEC 8): Prometheus text with firings, runs, durations, queue, webhook answers, reloads, lag."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from tests.harness import Daemon, http, running_daemon, wait_for

DEFS = """\
agent: {id: echo, type: command, command: [cat]}
---
trigger:
  id: hook
  type: webhook
  webhook: {authentication: {type: bearer, secret: s3cret}}
  agent: {id: echo}
---
trigger: {id: manual, type: event, event: {pattern: never}, agent: {id: echo}}
"""


def scrape(daemon: Daemon) -> dict[str, float]:
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")  # the Prometheus text format
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def test_metrics_count_what_happened(tmp_path: Path) -> None:
    with running_daemon(tmp_path, DEFS) as daemon:
        daemon.wait_run(daemon.fire("manual"))
        assert http("POST", daemon.url + "/webhooks/hook", {}, {"Authorization": "Bearer s3cret"})[0] == 202
        assert http("POST", daemon.url + "/webhooks/hook", {}, {"Authorization": "Bearer nope"})[0] == 401
        assert http("POST", daemon.url + "/webhooks/nowhere", {})[0] == 404
        assert daemon.request("POST", "/v1/reload")[0] == 200
        daemon.request("POST", "/v1/events", {"type": "x.y"})
        samples = wait_for(
            lambda: (s := scrape(daemon)).get('triggerd_runs_total{status="completed",trigger="hook"}') and s,
            timeout=10,
        )
    assert samples['triggerd_firings_total{source="manual",trigger="manual"}'] == 1
    assert samples['triggerd_firings_total{source="webhook",trigger="hook"}'] == 1
    assert samples['triggerd_runs_total{status="completed",trigger="manual"}'] == 1
    assert samples['triggerd_run_duration_seconds_count{trigger="manual"}'] == 1
    assert samples['triggerd_webhook_responses_total{code="202",trigger="hook"}'] == 1
    assert samples['triggerd_webhook_responses_total{code="401",trigger="hook"}'] == 1
    assert samples['triggerd_webhook_responses_total{code="404",trigger="-"}'] == 1
    assert samples['triggerd_webhook_auth_failures_total{trigger="hook"}'] == 1
    assert samples['triggerd_reloads_total{result="applied"}'] == 1
    assert samples["triggerd_config_last_reload_ok"] == 1
    assert samples['triggerd_events_total{origin="api"}'] == 1
    # The daemon's own: agent.run.completed twice and system.config.reloaded, counted although no
    # trigger listens to them (then they are not built: tests/test_events.py has one listened to).
    assert samples['triggerd_events_total{origin="triggerd"}'] == 3
    assert samples["triggerd_queue_depth"] == 0
    assert "triggerd_schedule_lag_seconds_count" in samples
    assert not any("s3cret" in key for key in samples)
