"""The worker in-process, against the real SQS server, PostgreSQL and the OpenAI-wire server:
batched acknowledgements, receives sized to free slots, deferral of a claimed job, the DLQ for
messages that can never succeed, and handing back what it cannot finish."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from questions.llm.client import aclose_llm_clients
from questions.models import Question
from questions.services import question_create, question_enqueue, questions_requeue
from questions.sqs.client import get_sqs_client
from questions.sqs.worker import Worker
from tests.factories import QuestionFactory, ask_many, reloaded, wait_for_status
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}


@contextmanager
def sqs_calls(operation: str) -> Iterator[list[dict[str, Any]]]:
    """Record the parameters of every `operation` call this process makes to SQS."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        seen.append({**params, "_at": time.monotonic()})

    events = get_sqs_client().meta.events
    event = f"provide-client-params.sqs.{operation}"
    events.register(event, record)
    try:
        yield seen
    finally:
        events.unregister(event, record)


def make_worker(queues: Any, **options: Any) -> Worker:
    defaults: dict[str, Any] = {
        "wait_time": 1,
        "visibility_timeout": 10,
        "on_loop_end": aclose_llm_clients,  # as run_sqs_worker does
    }
    return Worker(queue_name=queues.name, dlq_name=queues.dlq_name, **(defaults | options))


@contextmanager
def running(worker: Worker) -> Iterator[dict[str, Any]]:
    """Run the worker on a thread; stop it and wait for it on the way out."""
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("finished", worker.run()))
    thread.start()
    try:
        yield outcome
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_acknowledges_in_batches_of_up_to_ten(user, queues, fake_llm, run_worker):
    ask_many(user, 25)
    with sqs_calls("DeleteMessageBatch") as batches, sqs_calls("DeleteMessage") as singles:
        run_worker("--concurrency=10")

    assert Question.objects.filter(status=Question.Status.SUCCEEDED).count() == 25
    sizes = [len(call["Entries"]) for call in batches]
    assert sum(sizes) == 25
    assert max(sizes) <= 10
    assert len(sizes) < 25, f"one delete call per message: {sizes}"
    assert singles == []
    assert queues.depth() == EMPTY


@pytest.mark.parametrize(("concurrency", "ceiling"), [(3, 3), (16, 10)])
def test_receives_no_more_messages_than_free_slots(
    user, queues, fake_llm, run_worker, concurrency, ceiling
):
    fake_llm.configure(latency=0.1)
    ask_many(user, 24)
    with sqs_calls("ReceiveMessage") as receives:
        run_worker(f"--concurrency={concurrency}")

    asked_for = [call["MaxNumberOfMessages"] for call in receives]
    assert max(asked_for) == ceiling
    assert fake_llm.max_in_flight <= concurrency
    assert fake_llm.calls == 24


def test_a_job_running_under_a_live_claim_is_deferred_without_an_llm_call(user, queues, fake_llm):
    expires = timezone.now() + timedelta(seconds=30)
    question = QuestionFactory(
        owner=user, status=Question.Status.RUNNING, attempts=1, claim_expires_at=expires
    )
    assert question_enqueue(question_id=question.pk)

    worker = make_worker(queues)
    with running(worker):
        wait_until(lambda: worker.processed >= 1, timeout=10, what="the message to be handled")
        # Left on the queue, invisible until about when the claim runs out.
        assert queues.depth() == {"visible": 0, "in_flight": 1, "delayed": 0}

    assert fake_llm.calls == 0
    row = reloaded(question)
    assert (row.status, row.attempts, row.claim_expires_at) == (
        Question.Status.RUNNING,
        1,
        expires,
    )


def test_a_duplicate_of_a_finished_job_is_acknowledged_without_an_llm_call(
    user, queues, fake_llm, run_worker
):
    question = QuestionFactory(owner=user, status=Question.Status.SUCCEEDED, attempts=1)
    assert question_enqueue(question_id=question.pk)

    run_worker()

    assert fake_llm.calls == 0
    assert queues.depth() == EMPTY
    assert queues.dlq_messages() == []


def test_a_job_past_its_attempts_fails_without_another_llm_call(user, queues, fake_llm, run_worker):
    question = QuestionFactory(
        owner=user,
        status=Question.Status.RUNNING,
        attempts=2,
        claim_expires_at=timezone.now() - timedelta(seconds=1),  # its worker died, twice
    )
    assert question_enqueue(question_id=question.pk)

    run_worker("--max-attempts=2")

    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.FAILED, 3)
    assert "Gave up after 2 attempts" in row.error
    assert fake_llm.calls == 0


def _message(task: str, kwargs: dict[str, Any], args: list[Any] | None = None) -> str:
    return json.dumps({"v": 1, "task": task, "id": "r", "args": args or [], "kwargs": kwargs})


def test_messages_that_can_never_succeed_go_to_the_dlq(user, queues, fake_llm, run_worker, caplog):
    task = "questions.tasks.answer_question"
    poison = {
        "[1, 2]": "not a JSON object",
        json.dumps({"v": 99}): "unknown format version",
        _message("questions.nowhere.task", {"job_id": "x"}): "unknown task",
        _message("json.dumps", {"obj": 1}): "is not a task",
        _message(task, {}): "arguments do not fit",
        _message(task, {"job_id": "a", "extra": 1}): "arguments do not fit",
        _message(task, {"job_id": "not-a-uuid"}): "is not a UUID",
        _message(task, {"job_id": str(uuid.uuid4())}): "no job with id",
    }
    for body in poison:
        queues.send_raw(body)
    good = question_create(owner=user, text="Still served?")[0]

    caplog.set_level(logging.INFO, logger="questions.sqs.worker")
    run_worker()

    assert reloaded(good).status == Question.Status.SUCCEEDED
    assert fake_llm.calls == 1
    dead = {m["Body"]: m for m in queues.dlq_messages()}
    assert set(dead) == set(poison)
    for body, reason in poison.items():
        assert reason in dead[body]["MessageAttributes"]["dead_letter_reason"]["StringValue"]
    assert queues.depth() == EMPTY
    assert "Worker stopped after 9 messages." in caplog.text


def test_messages_received_after_stop_are_given_back_at_once(user, queues, fake_llm):
    ask_many(user, 3)
    worker = make_worker(queues, concurrency=2, visibility_timeout=60)

    def stop_during_receive(params: dict[str, Any], **kwargs: Any) -> None:
        worker.stop()  # the signal arrives while the receive is on its way

    events = get_sqs_client().meta.events
    events.register("provide-client-params.sqs.ReceiveMessage", stop_during_receive)
    try:
        assert worker.run() is True
    finally:
        events.unregister("provide-client-params.sqs.ReceiveMessage", stop_during_receive)

    assert fake_llm.calls == 0
    # Two were received (two slots) and handed straight back: visible, not held for 60 s.
    assert queues.depth() == {"visible": 3, "in_flight": 0, "delayed": 0}
    assert Question.objects.filter(status=Question.Status.QUEUED).count() == 3


def test_jobs_that_outlive_the_grace_period_are_given_back(user, queues, fake_llm, settings):
    settings.OPENAI_TIMEOUT = 2.0
    fake_llm.enqueue({"hang": True})
    (question,) = ask_many(user, 1)
    worker = make_worker(queues, visibility_timeout=60, shutdown_timeout=0.2)

    with running(worker) as outcome:
        assert fake_llm.wait_for_calls(1, timeout=10)
    assert outcome["finished"] is False
    assert worker.unfinished == 1
    assert queues.depth() == {"visible": 1, "in_flight": 0, "delayed": 0}
    # The cut-off call times out on its own thread and releases the job for a retry.
    wait_for_status(
        question, Question.Status.QUEUED, timeout=10, what="the cut-off job to be released"
    )


def test_heartbeat_keeps_a_long_job_invisible_and_stops_when_it_ends(
    user, queues, fake_llm, run_worker
):
    fake_llm.configure(latency=3.5)
    ask_many(user, 1)
    with sqs_calls("ChangeMessageVisibilityBatch") as extensions:
        run_worker("--visibility-timeout=1", "--concurrency=1")

    assert fake_llm.calls == 1
    # Extended about every third of a second for 3.5 s, each time for the full timeout.
    assert len(extensions) >= 5
    assert {e["VisibilityTimeout"] for call in extensions for e in call["Entries"]} == {1}
    answered = fake_llm.requests[0]["_received_at"] + 3.5
    assert max(call["_at"] for call in extensions) < answered + 0.3
    assert queues.depth() == EMPTY


def test_the_requeue_sweep_sends_in_batches_of_ten(user, queues):
    old = timezone.now() - timedelta(days=1)
    Question.objects.bulk_create(
        Question(owner=user, text=f"Never sent {i}?", created_at=old) for i in range(25)
    )
    with sqs_calls("SendMessageBatch") as batches, sqs_calls("SendMessage") as singles:
        report = questions_requeue(lost_after=300, retention_seconds=4 * 24 * 3600)

    assert (report.unsent, report.not_sent) == (25, 0)
    assert sorted(len(call["Entries"]) for call in batches) == [5, 10, 10]
    assert singles == []
    assert queues.depth()["visible"] == 25
    assert not Question.objects.filter(enqueued_at__isnull=True).exists()
