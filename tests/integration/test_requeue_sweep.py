"""The requeue sweep (`requeue_jobs`, and the worker's chore) sends again only what is provably
unsent or lost, never a job merely waiting in a backlog, on the database's clock, one sweep at a
time across every process."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from questions.models import Question
from questions.services import (
    RequeueReport,
    question_create,
    questions_enqueue,
    questions_requeue,
)
from questions.sqs.client import reset_sqs_client
from tests.factories import QuestionFactory, ask_many, reloaded
from tests.support import ROOT, child_env, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def sweep(*args: str) -> str:
    out = StringIO()
    call_command("requeue_jobs", *args, stdout=out, stderr=out)
    return out.getvalue()


def backdate(questions: Any, seconds: float) -> None:
    """Move the jobs' times back on the database's clock, as if asked (and sent) that long ago."""
    delta = timedelta(seconds=seconds)
    Question.objects.filter(pk__in=[q.pk for q in questions]).update(
        created_at=F("created_at") - delta, enqueued_at=F("enqueued_at") - delta
    )


def backlog(user: Any, count: int) -> list[Question]:
    """`count` queued jobs, each sent to SQS once (as question_create sends them, in batches)."""
    questions = Question.objects.bulk_create(
        Question(owner=user, text=f"Waiting {i}?") for i in range(count)
    )
    assert questions_enqueue(question_ids=[q.pk for q in questions]) == []
    Question.objects.filter(pk__in=[q.pk for q in questions]).update(enqueued_at=Now())
    return questions


def test_a_backlog_waiting_on_the_queue_survives_every_sweep_unsent_again(user, queues):
    waiting = backlog(user, 200)
    backdate(waiting, 3600)  # an hour in the queue: past QUESTIONS_REQUEUE_AFTER, no worker
    assert queues.depth()["visible"] == 200

    for _ in range(3):
        assert "Requeued 0 jobs" in sweep()
        assert queues.depth() == {"visible": 200, "in_flight": 0, "delayed": 0}

    from questions.worker.chores import requeue_chore

    chore = requeue_chore(60.0, queues.name)  # the worker's own sweep, as each process runs it
    for _ in range(3):
        chore.run()
        assert queues.depth()["visible"] == 200
    assert Question.objects.filter(status=Question.Status.QUEUED).count() == 200


def test_a_job_sqs_never_accepted_is_sent_by_the_sweep_once(
    user, queues, sqs_endpoint, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{free_port()}")
    reset_sqs_client()
    try:
        question, _ = question_create(owner=user, text="Sent while SQS was down?")
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", sqs_endpoint)
        reset_sqs_client()
    assert reloaded(question).enqueued_at is None
    waiting = backlog(user, 3)  # others wait on the queue meanwhile: not drained
    backdate([question], 60)  # past the short grace, well short of QUESTIONS_REQUEUE_AFTER

    assert "Requeued 1 jobs: 1 never sent, 0 stale" in sweep()
    assert queues.depth()["visible"] == len(waiting) + 1
    assert reloaded(question).enqueued_at is not None
    assert "Requeued 0 jobs" in sweep()
    assert queues.depth()["visible"] == len(waiting) + 1


def test_lost_messages_are_sent_again_once(user, queues):
    """What provably has no message: a job sent longer ago than the queue keeps one; a running
    job whose lease lapsed long ago; a sent job while the queue holds nothing at all."""
    waiting = backlog(user, 2)
    past_retention = QuestionFactory(owner=user)
    Question.objects.filter(pk=past_retention.pk).update(
        enqueued_at=Now() - timedelta(days=5), created_at=Now() - timedelta(days=5)
    )
    abandoned = QuestionFactory(owner=user, status=Question.Status.RUNNING, attempts=1)
    lapsing = QuestionFactory(owner=user, status=Question.Status.RUNNING, attempts=1)
    Question.objects.filter(pk=abandoned.pk).update(
        claim_expires_at=Now() - timedelta(hours=1), enqueued_at=Now() - timedelta(hours=2)
    )
    Question.objects.filter(pk=lapsing.pk).update(
        claim_expires_at=Now() - timedelta(seconds=5), enqueued_at=Now()
    )

    assert "Requeued 2 jobs: 0 never sent, 1 stale, 1 with an expired claim" in sweep()
    assert queues.depth()["visible"] == len(waiting) + 2
    assert reloaded(abandoned).status == Question.Status.QUEUED
    assert reloaded(lapsing).status == Question.Status.RUNNING  # its worker may be alive
    assert "Requeued 0 jobs" in sweep()
    assert queues.depth()["visible"] == len(waiting) + 2


@pytest.mark.parametrize("skew", [3600, -3600])
def test_the_sweeps_clock_does_not_matter(user, queues, skew):
    waiting = ask_many(user, 5)
    unsent = QuestionFactory(owner=user)  # SQS refused it a minute ago
    Question.objects.filter(pk=unsent.pk).update(created_at=Now() - timedelta(minutes=1))

    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "requeue_jobs"],
        cwd=ROOT,
        env=child_env(
            DJANGO_SETTINGS_MODULE="tests.integration.skewed_settings",
            TEST_CLOCK_SKEW_SECONDS=str(skew),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Requeued 1 jobs: 1 never sent, 0 stale" in result.stdout, result.stdout
    assert queues.depth()["visible"] == len(waiting) + 1


def test_one_sweep_at_a_time(user, queues):
    from questions.services import REQUEUE_LOCK_KEY

    unsent = QuestionFactory.create_batch(30, owner=user)
    backdate(unsent, 60)
    outputs: list[str] = []

    def other_process() -> None:
        try:
            outputs.append(sweep("--older-than=0"))
        finally:
            connection.close()

    with transaction.atomic(), connection.cursor() as cursor:  # a sweep in progress elsewhere
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [REQUEUE_LOCK_KEY])
        assert cursor.fetchone() == (True,)
        thread = threading.Thread(target=other_process)
        thread.start()
        thread.join(timeout=30)
    assert outputs == ["Another requeue sweep is running; nothing done.\n"]
    assert queues.depth()["visible"] == 0

    assert "Requeued 30 jobs: 30 never sent" in sweep()
    assert queues.depth()["visible"] == 30


def test_a_sweep_looks_at_the_queue_under_its_lock(user, queues):
    """Whether the queue is drained is asked once the sweep holds its lock: a sweep that looked
    before would take, as lost, the jobs another sweep had just marked but not yet sent."""
    lost = QuestionFactory.create_batch(5, owner=user, enqueued_at=timezone.now())
    backdate(lost, 60)  # sent a minute ago; their messages are gone
    asked, answer = threading.Event(), threading.Event()
    reports: list[RequeueReport] = []

    def drained() -> bool:
        asked.set()
        assert answer.wait(timeout=30)
        return True

    def first_sweep() -> None:
        try:
            reports.append(
                questions_requeue(lost_after=0, retention_seconds=3600, queue_drained=drained)
            )
        finally:
            connection.close()

    thread = threading.Thread(target=first_sweep)
    thread.start()
    try:
        assert asked.wait(timeout=30)
        assert sweep("--older-than=0") == "Another requeue sweep is running; nothing done.\n"
    finally:
        answer.set()
        thread.join(timeout=30)
    assert reports and not reports[0].skipped
    assert reports[0].stale == 5  # sent long ago, and the queue said it holds nothing
    assert queues.depth()["visible"] == 5


def test_two_concurrent_sweeps_send_each_job_once(user, queues):
    unsent = QuestionFactory.create_batch(40, owner=user)
    backdate(unsent, 60)
    start = threading.Barrier(2)
    outputs: list[str] = []

    def one_sweep() -> None:
        try:
            start.wait(timeout=10)
            outputs.append(sweep("--older-than=0"))
        finally:
            connection.close()

    threads = [threading.Thread(target=one_sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outputs) == 2, outputs
    assert queues.depth()["visible"] == 40
    assert not Question.objects.filter(enqueued_at__isnull=True).exists()
