"""The one backoff policy: exponential with equal jitter, capped, never sooner than Retry-After.

Used for every wait the worker makes after a failure (an SQS call, a task that raised, an LLM
call that will be retried, a store that will be tried again), like sqs-workers' policy objects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 2.0
    cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (`attempt` counts from 1)."""
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


# Deliveries of a job before it fails (`run_sqs_worker --max-attempts`): the one default, used by
# the Worker and by the task when its context carries none.
DEFAULT_MAX_ATTEMPTS = 5
# Retries of a job: 2 s, 4 s, 8 s ... up to 5 minutes.
JOB_BACKOFF = Backoff(base=2.0, cap=300.0)
# Reconnecting to a service that went away (SQS, PostgreSQL): quick first, then up to 10 s.
CONNECTION_BACKOFF = Backoff(base=0.5, cap=10.0)
