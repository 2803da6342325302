"""Fault tests: `run_sqs_worker` as a real subprocess against the real PostgreSQL, Redis, SQS
server and the OpenAI-wire test server. Each asserts the final job rows, what is left on the
queue and in the DLQ, and how often the LLM was called."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest
from django.core.management import call_command

from questions import job_cache
from questions.models import Question
from questions.services import question_enqueue
from questions.sqs.client import reset_sqs_client
from questions.sqs.queues import queue_depth
from tests.factories import ask, reloaded, wait_for_status
from tests.support import api_ask, free_port

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}


def asked(fake_llm: Any) -> list[str]:
    """The user message of every LLM call, in arrival order."""
    return [request["messages"][-1]["content"] for request in fake_llm.requests]


class DepthSampler:
    """Samples the queue's depth in the background, to catch what a final look would miss."""

    def __init__(self, queue_url: str, interval: float = 0.1) -> None:
        self.queue_url = queue_url
        self.interval = interval
        self.samples: list[dict[str, int]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DepthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(queue_depth(self.queue_url))
            self._halt.wait(self.interval)

    def most(self, state: str) -> int:
        return max(sample[state] for sample in self.samples)


@pytest.fixture
def short_claims(settings: Any) -> None:
    """A 3 s LLM timeout and a 1 s claim margin: a dead worker's claim lapses after 4 s."""
    settings.OPENAI_TIMEOUT = 3.0
    settings.QUESTIONS_CLAIM_MARGIN = 1


def test_kill_9_during_the_llm_call_is_finished_later_by_another_worker_once(
    user, queues, fake_llm, worker_process, short_claims
):
    fake_llm.enqueue({"hang": True})  # the first call never answers; the next one does
    question = ask(user)

    first = worker_process("--visibility-timeout=2", "--concurrency=1")
    assert fake_llm.wait_for_calls(1, timeout=15), first.output
    first.kill()  # SIGKILL mid-call: no cleanup, no goodbye
    assert reloaded(question).status == Question.Status.RUNNING

    second = worker_process("--visibility-timeout=2", "--burst")
    assert second.wait(timeout=30) == 0, second.output

    finished = reloaded(question)
    assert finished.status == Question.Status.SUCCEEDED
    assert finished.answer
    assert finished.attempts == 2  # the cut-off call and the one that answered
    assert fake_llm.calls == 2
    assert queues.depth() == EMPTY
    assert queues.dlq_messages() == []


def test_sigterm_during_the_llm_call_finishes_the_job_and_gives_the_rest_back(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(latency=2.0)
    questions = [ask(user, f"Question {i}?") for i in range(5)]

    worker = worker_process("--visibility-timeout=30", "--concurrency=2")
    assert fake_llm.wait_for_in_flight(2, timeout=15), worker.output
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, worker.output

    started = set(asked(fake_llm))
    assert len(started) == 2 and fake_llm.calls == 2
    for question in questions:
        row = reloaded(question)
        if question.text in started:
            assert (row.status, row.attempts) == (Question.Status.SUCCEEDED, 1)
        else:
            assert (row.status, row.attempts) == (Question.Status.QUEUED, 0)
    # Nothing held invisible by the dead worker: with a 30 s visibility timeout, a message it
    # received but did not hand back would show as in flight.
    assert queues.depth() == {"visible": 3, "in_flight": 0, "delayed": 0}
    assert "SIGTERM received" in worker.output


def test_sigterm_with_a_job_outliving_the_grace_period_exits_without_waiting_for_it(
    user, queues, fake_llm, worker_process
):
    fake_llm.enqueue({"hang": True})  # would hold the job for OPENAI_TIMEOUT (10 s)
    question = ask(user)

    worker = worker_process("--visibility-timeout=30", "--shutdown-timeout=0.5")
    assert fake_llm.wait_for_calls(1, timeout=15), worker.output
    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=8) == 1, worker.output
    assert time.monotonic() - signalled < 5  # did not sit out the 10 s call

    assert "1 jobs were cut off by the shutdown timeout." in worker.output
    # Its message is back on the queue at once; the job's claim lapses by itself.
    assert queues.depth() == {"visible": 1, "in_flight": 0, "delayed": 0}
    assert reloaded(question).status == Question.Status.RUNNING


def test_an_llm_call_longer_than_three_visibility_timeouts_is_made_once(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(latency=7.0)  # > 3 × the 2 s visibility timeout; OPENAI_TIMEOUT is 10 s
    question = ask(user)

    # One slot: a redelivered message would have nowhere to go and show up as visible.
    worker = worker_process("--visibility-timeout=2", "--concurrency=1", "--burst")
    assert fake_llm.wait_for_calls(1, timeout=15), worker.output
    with DepthSampler(queues.url) as sampler:
        assert worker.wait(timeout=30) == 0, worker.output

    assert fake_llm.calls == 1
    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.SUCCEEDED, 1)
    assert sampler.most("visible") == 0, "the message became visible again mid-call"
    assert queues.depth() == EMPTY


def test_the_same_message_delivered_twice_calls_the_llm_once(
    user, queues, fake_llm, worker_process, short_claims
):
    fake_llm.configure(latency=1.0)
    question = ask(user)
    assert question_enqueue(question_id=question.pk)  # the same job on the queue twice
    assert queues.depth()["visible"] == 2

    # Two slots: both copies are received together; one claims the job, the other waits.
    worker = worker_process("--visibility-timeout=2", "--concurrency=2", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    assert fake_llm.calls == 1
    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.SUCCEEDED, 1)
    assert queues.depth() == EMPTY
    assert queues.dlq_messages() == []


def test_429_with_retry_after_then_200_succeeds_no_sooner_than_retry_after(
    user, queues, fake_llm, worker_process
):
    fake_llm.enqueue({"status": 429, "retry_after": 2})
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    # Waiting for the provider's rate limit does not use up an attempt.
    assert (row.status, row.attempts, row.error) == (Question.Status.SUCCEEDED, 1, "")
    assert fake_llm.calls == 2
    first, second = (request["_received_at"] for request in fake_llm.requests)
    assert second - first >= 2.0
    assert queues.depth() == EMPTY


def test_500_every_time_fails_after_max_attempts_with_the_reason(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(always={"status": 500})
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--max-attempts=3", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.FAILED, 3)
    assert "HTTP 500" in row.error and "Gave up after 3 attempts" in row.error
    assert row.finished_at is not None
    assert fake_llm.calls == 3
    assert queues.depth() == EMPTY
    assert queues.dlq_messages() == []


def test_400_fails_after_one_call_without_retry(user, queues, fake_llm, worker_process):
    fake_llm.enqueue({"status": 400})
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.FAILED, 1)
    assert row.error == "The language model rejected the question as invalid."
    assert fake_llm.calls == 1
    assert queues.depth() == EMPTY


def test_an_llm_that_hangs_past_openai_timeout_is_retried(
    user, queues, fake_llm, worker_process, settings
):
    settings.OPENAI_TIMEOUT = 1.0
    fake_llm.enqueue({"hang": True})
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert (row.status, row.attempts, row.error) == (Question.Status.SUCCEEDED, 2, "")
    assert fake_llm.calls == 2
    first, second = (request["_received_at"] for request in fake_llm.requests)
    assert second - first >= 1.0  # the retry came after the timeout
    assert queues.depth() == EMPTY


def test_an_llm_that_always_hangs_fails_after_max_attempts(
    user, queues, fake_llm, worker_process, settings
):
    settings.OPENAI_TIMEOUT = 1.0
    fake_llm.configure(always={"hang": True})
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--max-attempts=2", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.FAILED, 2)
    assert "did not answer in time" in row.error
    assert fake_llm.calls == 2
    assert queues.depth() == EMPTY


def test_malformed_and_unknown_job_messages_go_to_the_dlq_and_the_worker_serves_on(
    user, queues, fake_llm, worker_process
):
    queues.send_raw("this is not JSON")
    unknown = str(uuid.uuid4())
    queues.send_raw(
        json.dumps(
            {
                "v": 1,
                "task": "questions.tasks.answer_question",
                "id": "x",
                "args": [],
                "kwargs": {"job_id": unknown},
            }
        )
    )
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output

    assert reloaded(question).status == Question.Status.SUCCEEDED
    assert fake_llm.calls == 1
    dead = queues.dlq_messages()
    assert len(dead) == 2
    assert "this is not JSON" in {m["Body"] for m in dead}
    reasons = " | ".join(m["MessageAttributes"]["dead_letter_reason"]["StringValue"] for m in dead)
    assert "not JSON" in reasons and f"no job with id {unknown}" in reasons
    assert queues.depth() == EMPTY
    assert "message moved to the DLQ" in worker.output


def test_a_question_asked_while_sqs_is_unreachable_is_sent_later_and_answered(
    api, queues, fake_llm, worker_process, monkeypatch
):
    endpoint = os.environ["AWS_ENDPOINT_URL_SQS"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{free_port()}")
    reset_sqs_client()
    try:
        response = api_ask(api, "Are you there?")
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", endpoint)
        reset_sqs_client()
    assert response.status_code == 202
    row = Question.objects.get(pk=response.json()["id"])
    assert (row.status, row.enqueued_at) == (Question.Status.QUEUED, None)
    assert queues.depth() == EMPTY  # nothing reached SQS

    call_command("requeue_jobs", "--older-than=0")
    assert queues.depth()["visible"] == 1

    worker = worker_process("--visibility-timeout=5", "--burst")
    assert worker.wait(timeout=30) == 0, worker.output
    assert api.get(f"/api/questions/{row.pk}/").json()["status"] == "succeeded"
    assert fake_llm.calls == 1


def test_the_worker_sends_unsent_jobs_itself_on_its_requeue_interval(
    user, queues, fake_llm, worker_process
):
    question = Question.objects.create(owner=user, text="Never sent?")
    Question.objects.filter(pk=question.pk).update(
        created_at=question.created_at.replace(year=question.created_at.year - 1)
    )
    assert queues.depth() == EMPTY

    worker = worker_process("--visibility-timeout=5", "--requeue-interval=1")
    wait_for_status(
        question,
        Question.Status.SUCCEEDED,
        timeout=20,
        what="the worker's sweep to send and answer the job",
    )
    assert fake_llm.calls == 1
    assert "Requeued 1 stale jobs." in worker.output


def test_redis_down_while_the_worker_stores_the_answer(user, api, queues, fake_llm, worker_process):
    fake_llm.configure(answer="Stored in PostgreSQL anyway.")
    question = ask(user)

    worker = worker_process(
        "--visibility-timeout=5", "--burst", env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert (row.status, row.answer) == (Question.Status.SUCCEEDED, "Stored in PostgreSQL anyway.")
    assert job_cache.job_cache_get(question.pk) is None  # the worker could not cache it
    body = api.get(f"/api/questions/{question.pk}/").json()
    assert (body["status"], body["answer"]) == ("succeeded", "Stored in PostgreSQL anyway.")
    assert "Redis cache unavailable" in worker.output


def test_concurrency_8_runs_40_one_second_jobs_in_parallel_holding_at_most_16_messages(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(latency=1.0)
    questions = [ask(user, f"Parallel question {i}?") for i in range(40)]

    started = time.monotonic()
    with DepthSampler(queues.url, interval=0.05) as sampler:
        worker = worker_process("--visibility-timeout=30", "--concurrency=8", "--burst")
        assert worker.wait(timeout=40) == 0, worker.output
    elapsed = time.monotonic() - started

    assert Question.objects.filter(status=Question.Status.SUCCEEDED).count() == 40
    assert {row.attempts for row in Question.objects.filter(pk__in=[q.pk for q in questions])} == {
        1
    }
    assert fake_llm.calls == 40
    arrivals = [request["_received_at"] for request in fake_llm.requests]
    busy = max(arrivals) + 1.0 - min(arrivals)  # first call to last answer: ideally 5 s
    assert busy < 12, f"40 one-second jobs on 8 slots took {busy:.1f}s"
    assert elapsed < 35, f"the whole run, worker start-up included, took {elapsed:.1f}s"
    assert fake_llm.max_in_flight == 8  # all slots were used, and never more
    # SQS's own count of messages received and not yet deleted: the 8 running, and at most 8
    # acknowledged ones whose batched delete is on its way (a slot is free once the job's
    # outcome is stored).
    assert 0 < sampler.most("in_flight") <= 16
    assert queues.depth() == EMPTY
