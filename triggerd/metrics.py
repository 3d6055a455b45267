"""Prometheus metrics (SPEC 8), in one registry of triggerd's own, served at GET /metrics."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.firings = Counter(
            "triggerd_firings", "Firings turned into runs, by trigger and source", ["trigger", "source"], registry=r
        )
        self.runs = Counter("triggerd_runs", "Runs that reached a final status", ["trigger", "status"], registry=r)
        self.skips = Counter(
            "triggerd_skips",
            "Firings recorded skipped, by trigger and reason (SPEC 12)",
            ["trigger", "reason"],
            registry=r,
        )
        self.run_duration = Histogram(
            "triggerd_run_duration_seconds",
            "From a run's start to its end",
            ["trigger"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("triggerd_queue_depth", "Runs waiting to start", registry=r)
        self.running = Gauge("triggerd_running_runs", "Runs running now", registry=r)
        self.webhook_responses = Counter(
            "triggerd_webhook_responses", "Webhook answers by trigger and status code", ["trigger", "code"], registry=r
        )
        self.auth_failures = Counter(
            "triggerd_webhook_auth_failures", "Webhook requests refused with 401", ["trigger"], registry=r
        )
        self.reloads = Counter("triggerd_reloads", "Reloads, applied or rejected", ["result"], registry=r)
        self.schedule_lag = Histogram(
            "triggerd_schedule_lag_seconds", "When a slot fired, minus when it was due", buckets=LAG_BUCKETS, registry=r
        )
        self.events = Counter("triggerd_events", "Events received, by where they came from", ["origin"], registry=r)
        self.config_valid = Gauge(
            "triggerd_config_last_reload_ok", "1 if the last reload was applied, 0 if not", registry=r
        )
        self.config_valid.set(1)
        self.config_problems = Gauge(
            "triggerd_config_problems",
            "Problems of the running configuration's files, by severity (errors: definitions left out)",
            ["severity"],
            registry=r,
        )
        # SPEC 5.4: per source; outcome is run (published, fired or not), duplicate, dead_letter
        self.source_messages = Counter(
            "triggerd_source_messages",
            "Broker messages handled, by source and outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.source_in_flight = Gauge(
            "triggerd_source_in_flight", "Messages received and not yet acknowledged", ["source"], registry=r
        )
        self.source_up = Gauge("triggerd_source_up", "1 while the source is consuming, else 0", ["source"], registry=r)
        self.source_lag = Gauge(
            "triggerd_source_lag", "Messages waiting on the broker, where it reports them", ["source"], registry=r
        )

    def watch(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        """Read the dispatcher's gauges when scraped, rather than keeping copies in step."""
        self.queue_depth.set_function(queue_depth)
        self.running.set_function(running)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS = Metrics()


@cache  # the metric keeps every child anyway: a bound only made 10,000 triggers miss every time
def labelled(metric: Any, *values: str) -> Any:
    """A metric's child for these label values, looked up once (labels() validates and locks every time)."""
    return metric.labels(*values)
