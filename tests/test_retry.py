from __future__ import annotations

import random

from triggerd.config.models import RetryPolicy
from triggerd.dispatch.retry import backoff_delay


def test_full_jitter_stays_below_the_exponential_ceiling_and_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=10, max_backoff=60)
    rng = random.Random(7)
    for failures, ceiling in ((1, 10), (2, 20), (3, 40), (4, 60), (8, 60)):
        samples = [backoff_delay(policy, failures, rng) for _ in range(2000)]
        assert min(samples) >= 0 and max(samples) <= ceiling
        assert max(samples) > 0.9 * ceiling  # the whole range is used, not a fixed delay
        assert min(samples) < 0.1 * ceiling
