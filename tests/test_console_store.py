"""The store queries the console reads (SPEC 13), run against both stores: the overview's summary,
the skips by reason (every reason SPEC 12 names; a pending run held back is no skip), and the runs
listed by source."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from triggerd.runs import RunStatus, Source
from triggerd.store.abc import RunSummary

from .test_store import make_store, new_run


def test_summary_skips_by_reason_and_listing_by_source(store_url: str) -> None:
    stamps = ["2026-01-01T00:00:00.000Z", "2026-01-01T10:00:00.000Z", "2026-01-01T11:30:00.000Z"]
    old, recent, newest = (new_run(trigger="t", created=at) for at in stamps)
    reasons = ["overlap", "overlap", "missed", "queue_full", "paused", "budget", "debounced"]
    skipped = [replace(new_run(trigger="u", created=stamps[2]), source=Source.SCHEDULE) for _ in reasons]
    held = replace(new_run(trigger="u", created=stamps[2]), reason="throttled")  # pending, waiting: not a skip
    dead = replace(new_run(trigger="u", created=stamps[1]), source=Source.WEBHOOK)

    async def scenario() -> dict[str, Any]:
        store = make_store(store_url)
        await store.open()
        empty = await store.run_summary("2026-01-01T00:00:00.000Z")
        for run in (old, recent, newest, *skipped, dead, held):
            await store.create_run(run)
        for run, reason in zip(skipped, reasons, strict=True):
            await store.finish_run(run.id, RunStatus.SKIPPED, at=stamps[2], reason=reason)
        await store.start_attempt(dead.id, 1, stamps[1])
        await store.end_attempt(
            dead.id, 1, status=RunStatus.FAILED, error="no", at=stamps[1], then=RunStatus.FAILED, dead_letter=True
        )
        found = {
            "empty": empty,
            "last hour": await store.run_summary("2026-01-01T11:00:00.000Z"),
            "day": await store.run_summary("2026-01-01T00:00:00.000Z"),
            "skips": await store.skip_counts(),
            "schedule": sorted(r.id for r in await store.list_runs(source="schedule")),
            "webhook of u": [r.id for r in await store.list_runs(trigger_id="u", source="webhook")],
            "webhook of t": [r.id for r in await store.list_runs(trigger_id="t", source="webhook")],
        }
        await store.close()
        return found

    assert asyncio.run(scenario()) == {
        "empty": RunSummary({}, 0, None, 0),
        "last hour": RunSummary({"pending": 2, "skipped": 7}, 4, stamps[0], 1),
        "day": RunSummary({"pending": 4, "skipped": 7, "failed": 1}, 4, stamps[0], 1),
        "skips": {"u": {"overlap": 2, "missed": 1, "queue_full": 1, "paused": 1, "budget": 1, "debounced": 1}},
        "schedule": sorted(r.id for r in skipped),
        "webhook of u": [dead.id],
        "webhook of t": [],
    }
