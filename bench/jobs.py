"""Jobs for the benchmarks: rows as the API makes them, messages as the backend sends them.

Import only after Django is set up (bench.rig.setup_django).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max, Min
from django.utils import timezone

from questions.accounts import api_token_create
from questions.models import Question
from questions.sqs.client import get_sqs_client
from questions.sqs.messages import encode_message
from questions.tasks import answer_question

QUESTION_TEXT = "What is the airspeed velocity of an unladen swallow?"


def bench_user() -> tuple[Any, str]:
    """The user who owns the bench jobs, and its API token."""
    user, _ = get_user_model().objects.get_or_create(username="bench")
    return user, api_token_create(user=user, name="bench").key


def reset_state() -> None:
    """No job rows, an empty bench cache (Redis db of its own)."""
    with connection.cursor() as cursor:
        # CASCADE: the ledger (LLMCall) and webhook deliveries reference the jobs.
        cursor.execute(f'TRUNCATE "{Question._meta.db_table}" CASCADE')
    cache.clear()


def create_queue(name: str) -> str:
    """A fresh queue (and its DLQ); the URL the server returns."""
    client = get_sqs_client()
    client.create_queue(QueueName=f"{name}-dlq")
    return client.create_queue(QueueName=name)["QueueUrl"]


def create_rows(owner: Any, count: int) -> list[uuid.UUID]:
    """Queued rows as question_create + question_enqueue leave them (enqueued_at set)."""
    now = timezone.now()
    rows = [
        Question(owner=owner, text=QUESTION_TEXT, created_at=now, enqueued_at=now)
        for _ in range(count)
    ]
    Question.objects.bulk_create(rows, batch_size=1000)
    return [row.pk for row in rows]


def send_messages(queue_url: str, ids: list[uuid.UUID]) -> None:
    """The messages SQSTaskBackend.enqueue sends, ten per call."""
    client = get_sqs_client()
    now = timezone.now().isoformat()
    for start in range(0, len(ids), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": encode_message(
                    task_path=answer_question.module_path,
                    result_id=uuid.uuid4().hex,
                    args=[],
                    kwargs={"job_id": str(job_id)},
                    enqueued_at=now,
                ),
            }
            for i, job_id in enumerate(ids[start : start + 10])
        ]
        response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"send_message_batch failed: {response['Failed']}")


def finished_count() -> int:
    return Question.objects.filter(status__in=Question.FINISHED).count()


def wait_finished(count: int, *, timeout: float, alive: Callable[[], bool]) -> float:
    """Poll until `count` jobs are finished; returns when that was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        done = finished_count()
        if done >= count:
            return time.monotonic()
        if not alive():
            raise RuntimeError("the consumer exited before the jobs were done")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done}/{count} jobs finished after {timeout:.0f}s")
        time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class Outcome:
    jobs: int
    succeeded: int
    llm_calls: int
    first_started: Any
    last_finished: Any

    @property
    def correct(self) -> bool:
        return self.succeeded == self.jobs and self.llm_calls == self.jobs

    @property
    def busy_seconds(self) -> float:
        """From the first job's claim to the last job's stored answer."""
        return (self.last_finished - self.first_started).total_seconds()


def outcome(jobs: int, llm_calls: int) -> Outcome:
    counts = dict(
        Question.objects.values_list("status").annotate(n=Count("pk")).order_by()  # type: ignore[arg-type]
    )
    span = Question.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
    return Outcome(
        jobs=jobs,
        succeeded=counts.get(Question.Status.SUCCEEDED, 0),
        llm_calls=llm_calls,
        first_started=span["first"],
        last_finished=span["last"],
    )


def job_times() -> dict[str, tuple[float, float]]:
    """Each finished job's (started_at, finished_at) as UNIX timestamps, by job id."""
    return {
        str(pk): (started.timestamp(), finished.timestamp())
        for pk, started, finished in Question.objects.filter(finished_at__isnull=False).values_list(
            "pk", "started_at", "finished_at"
        )
    }


def slot_time(concurrency: int, latency: float) -> dict[str, float | None]:
    """Where a slot's time goes beyond the LLM call, from the rows' own timestamps (p50, ms).

    - `in_job`: claim → stored answer, less L (the claim's query, the call's overhead, the store);
    - `refill`: a stored answer → the claim that took its slot. With C slots, the k-th claim
      (k ≥ C) could start only once the (k − C)-th answer was stored: the gap between the two
      is what the slot spent on the ack, the delete, the receive and the claim batch.
    Their sum is the time each job held its slot beyond its call.
    """
    rows = list(
        Question.objects.filter(finished_at__isnull=False).values_list("started_at", "finished_at")
    )
    if len(rows) <= concurrency:
        return {"in_job_ms": None, "refill_ms": None}
    starts = sorted(r[0].timestamp() for r in rows)
    finishes = sorted(r[1].timestamp() for r in rows)
    in_job = sorted((r[1].timestamp() - r[0].timestamp() - latency) * 1000 for r in rows)
    refill = sorted(
        (starts[k] - finishes[k - concurrency]) * 1000 for k in range(concurrency, len(starts))
    )
    return {
        "in_job_ms": round(in_job[len(in_job) // 2], 1),
        "refill_ms": round(refill[len(refill) // 2], 1),
    }
