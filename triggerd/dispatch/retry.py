"""Exponential backoff with full jitter: the delay before the next attempt."""

from __future__ import annotations

import random

from triggerd.config.models import RetryPolicy


def backoff_delay(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """A delay drawn uniformly from [0, min(max_backoff, backoff * 2^(failures-1))].

    Full jitter (rather than a fixed exponential) spreads the retries of many runs
    that failed together, so a recovering service is not hit by them at once.
    """
    ceiling = min(policy.max_backoff, policy.backoff * 2 ** max(failures - 1, 0))
    return rng.uniform(0.0, ceiling)
