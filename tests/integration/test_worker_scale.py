"""Hundreds of LLM calls in flight in one worker process: its PostgreSQL connections stay within
its pool however many jobs wait on the LLM, and SIGTERM and kill -9 keep their guarantees."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from questions.models import Question
from questions.services import questions_enqueue
from tests.support import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow(25)]

C = 256
POOL = 4
EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}


def ask_in_bulk(user: Any, count: int) -> list[Question]:
    """`count` jobs in one INSERT, sent as the service sends them (ten per SendMessageBatch);
    marked sent, as question_create leaves them, so no requeue sweep sends them again."""
    now = timezone.now()
    questions = Question.objects.bulk_create(
        Question(owner=user, text=f"Scale question {i}?", enqueued_at=now) for i in range(count)
    )
    assert questions_enqueue(question_ids=[q.pk for q in questions]) == []
    return questions


def worker_connections(app_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [app_name],
        )
        return int(cursor.fetchone()[0])


def statuses(questions: list[Question]) -> dict[str, int]:
    rows = Question.objects.filter(pk__in=[q.pk for q in questions])
    counts: dict[str, int] = {}
    for status in rows.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_256_slow_calls_in_flight_hold_no_more_connections_than_the_pool(
    user, queues, fake_llm, worker_process, settings
):
    # Long enough that all 256 calls are in flight together (moto hands out ~20 messages/s).
    settings.OPENAI_TIMEOUT = 40.0
    fake_llm.configure(latency=20.0)
    questions = ask_in_bulk(user, C)
    app_name = f"worker-{uuid.uuid4().hex[:8]}"

    worker = worker_process(
        f"--concurrency={C}",
        "--visibility-timeout=30",
        "--burst",
        "--requeue-interval=0",
        env={"PGAPPNAME": app_name, "QUESTIONS_WORKER_DB_THREADS": str(POOL)},
    )
    samples: list[int] = []
    halt = threading.Event()

    def sample() -> None:
        try:
            while not halt.is_set():
                samples.append(worker_connections(app_name))
                halt.wait(0.2)
        finally:
            connection.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        assert fake_llm.wait_for_in_flight(C, timeout=60), worker.output
        in_flight_connections = worker_connections(app_name)
        assert worker.wait(timeout=120) == 0, worker.output
    finally:
        halt.set()
        sampler.join(timeout=5)

    assert 1 <= in_flight_connections <= POOL
    assert max(samples) <= POOL, samples
    assert statuses(questions) == {Question.Status.SUCCEEDED: C}
    assert fake_llm.calls == C
    assert fake_llm.max_in_flight == C
    assert queues.depth() == EMPTY


def test_sigterm_with_256_calls_in_flight_finishes_them_and_gives_nothing_away(
    user, queues, fake_llm, worker_process, settings
):
    settings.OPENAI_TIMEOUT = 30.0
    fake_llm.configure(latency=15.0)
    questions = ask_in_bulk(user, C + 44)

    worker = worker_process(f"--concurrency={C}", "--visibility-timeout=30", "--requeue-interval=0")
    assert fake_llm.wait_for_in_flight(150, timeout=60), worker.output
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.output

    counts = statuses(questions)
    started = fake_llm.calls
    assert counts.get(Question.Status.SUCCEEDED) == started
    assert counts.get(Question.Status.QUEUED, 0) == len(questions) - started
    assert set(counts) <= {Question.Status.SUCCEEDED, Question.Status.QUEUED}
    depth = queues.depth()
    assert depth["in_flight"] == 0 and depth["visible"] == len(questions) - started


def test_kill_9_with_256_calls_in_flight_every_job_is_finished_later(
    user, queues, fake_llm, worker_process, settings
):
    settings.OPENAI_TIMEOUT = 12.0
    settings.QUESTIONS_CLAIM_MARGIN = 1
    fake_llm.configure(latency=10.0)
    questions = ask_in_bulk(user, C)

    first = worker_process(f"--concurrency={C}", "--visibility-timeout=5", "--requeue-interval=0")
    assert fake_llm.wait_for_in_flight(150, timeout=60), first.output
    first.kill()
    killed_at = time.monotonic()

    fake_llm.configure(latency=0.2)
    second = worker_process(
        f"--concurrency={C}", "--visibility-timeout=5", "--burst", "--requeue-interval=0"
    )
    wait_until(
        lambda: statuses(questions).get(Question.Status.SUCCEEDED) == C,
        timeout=120,
        what="every job to be answered",
    )
    assert second.wait(timeout=60) == 0, second.output
    rows = Question.objects.filter(pk__in=[q.pk for q in questions])
    # After the kill, exactly one call per job: a job cut off mid-call, or claimed and killed
    # before its call, is answered once, never twice. No attempt without a claim, no call
    # without an attempt (a job claimed just before the kill may have used one without a call).
    after_kill = [r for r in fake_llm.requests if r.get("_received_at", 0) > killed_at]
    assert len(after_kill) == C, second.output
    assert fake_llm.calls - C <= C
    assert fake_llm.calls <= sum(rows.values_list("attempts", flat=True))
    assert max(rows.values_list("attempts", flat=True)) <= 2
    assert queues.depth() == EMPTY
