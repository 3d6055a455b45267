"""From firing to run record: limits, queue, retries, timeouts and outcome recording."""
