"""A provider that rate limits for half a minute (three of its Retry-Afters): two worker
processes share one limiter through Redis, wait it out without using up attempts, and never call
faster than the configured RPM."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from questions.models import Question
from questions.services import question_create
from tests.support import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow(90)]

RPM = 120  # two calls a second, all workers together
JOBS = 50
LIMITED_FOR = 30.0  # seconds the provider answers 429
RETRY_AFTER = 10


def calls_per_window(times: list[float], window: float) -> int:
    """The most calls that fell in any half-open window of `window` seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.timeout(420)
def test_half_a_minute_of_429s_across_two_workers_costs_no_attempt_and_keeps_to_the_rpm(
    user: Any, queues: Any, fake_llm: Any, worker_process: Any
) -> None:
    fake_llm.configure(always={"status": 429, "retry_after": RETRY_AFTER})
    env = {"OPENAI_RPM": str(RPM), "OPENAI_RATE_LIMIT_PROCESSES": "2"}
    workers = [
        worker_process("--concurrency=32", "--requeue-interval=0", "--processes=1", env=env)
        for _ in range(2)
    ]
    questions = [question_create(owner=user, text=f"Question {n}?")[0] for n in range(JOBS)]

    assert fake_llm.wait_for_calls(1, timeout=30), workers[0].output
    # The provider lifts its limit half a minute after the first call it refused.
    lift = threading.Timer(LIMITED_FOR, lambda: fake_llm.configure(always=None))
    lift.start()
    try:
        wait_until(
            lambda: Question.objects.filter(status=Question.Status.SUCCEEDED).count() == JOBS,
            timeout=LIMITED_FOR + RETRY_AFTER + JOBS * 60 / RPM + 120,
            interval=0.5,
            what="every job to succeed once the provider lets calls through",
        )
    finally:
        lift.cancel()

    rows = Question.objects.filter(pk__in=[q.pk for q in questions])
    assert sorted(set(rows.values_list("status", flat=True))) == [Question.Status.SUCCEEDED]
    # Waiting for the provider is not the job's fault: one attempt each, the one that answered.
    assert sorted(set(rows.values_list("attempts", flat=True))) == [1]
    times = [request["_received_at"] for request in fake_llm.requests]
    successes = JOBS
    refused = len(times) - successes
    # A 429 pauses every worker for its Retry-After: half a minute of refusals costs a few calls,
    # not one per job and worker.
    assert 1 <= refused <= LIMITED_FOR / RETRY_AFTER + 3, refused
    # Across both processes, the provider never saw more than its RPM: two calls in any second,
    # RPM in any minute.
    assert calls_per_window(times, 1.0) <= RPM // 60
    assert calls_per_window(times, 60.0) <= RPM
    assert all("exited" not in w.output for w in workers)
