"""The worker streams the answer into the job's Redis stream as the LLM writes it, and Stop
(the row set to `cancelled`) cuts a running call off within a second, keeping what was written."""

from __future__ import annotations

import time

import pytest
import redis
from django.db.models.functions import Now

from questions.attribution import provider_user_id
from questions.live.streams import stream_key
from questions.models import Question
from questions.services import question_create
from tests.factories import reloaded
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}
WORDS = [f"word{i}" for i in range(20)]
ANSWER = " ".join(WORDS)


# A Redis database of these tests' own: other test runs on this machine flush the shared one
# (FLUSHDB) while a stream is being written. Keys are per job, so nothing here collides.
REDIS = "redis://127.0.0.1:6379/12"
ENV = {"REDIS_URL": REDIS}


def entries(question: Question) -> list[tuple[str, str]]:
    raw = redis.Redis.from_url(REDIS).xrange(stream_key(question.pk))
    return [
        (kind.decode(), value.decode()) for _id, fields in raw for kind, value in fields.items()
    ]


def text_of(items: list[tuple[str, str]]) -> str:
    return "".join(value for kind, value in items if kind == "delta")


def test_the_answer_streams_into_redis_while_the_llm_writes_it(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(answer=ANSWER, stream_interval=0.1)  # two seconds of writing
    question, _ = question_create(owner=user, text="Stream it?")

    worker = worker_process("--visibility-timeout=5", "--burst", env=ENV)
    # Part of the answer is readable while the call is still running.
    wait_until(
        lambda: 0 < len(text_of(entries(question))) < len(ANSWER) and fake_llm.in_flight == 1,
        timeout=20,
        what="a part of the answer in the stream mid-call",
    )
    assert worker.wait(timeout=30) == 0, worker.output

    items = entries(question)
    assert items[:2] == [("reset", "1"), ("status", "running")]
    assert items[-1] == ("end", "succeeded")
    assert text_of(items) == ANSWER
    assert 2 <= sum(kind == "delta" for kind, _ in items) < len(WORDS) + 1
    row = reloaded(question)
    assert (row.status, row.answer, row.completion_tokens) == ("succeeded", ANSWER, len(WORDS))
    (request,) = fake_llm.requests
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert request["max_completion_tokens"] == 1024
    assert request["user"] == provider_user_id(user_id=user.pk) != str(user.pk)
    assert len(request["user"]) <= 64


def test_stop_cuts_a_running_call_off_within_a_second_keeping_the_partial_answer(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(answer=ANSWER, stream_interval=0.5)  # ten seconds of writing
    question, _ = question_create(owner=user, text="Stop me?")

    worker = worker_process("--visibility-timeout=5", env=ENV)
    wait_until(lambda: text_of(entries(question)), timeout=20, what="the first words in the stream")
    cancelled_at = time.monotonic()
    Question.objects.filter(pk=question.pk).update(status="cancelled", finished_at=Now())
    wait_until(lambda: fake_llm.cut_streams == 1, timeout=5, what="the stream to be cut")
    assert time.monotonic() - cancelled_at < 2.0
    wait_until(
        lambda: ("end", "cancelled") in entries(question), timeout=5, what="the end of the stream"
    )

    row = reloaded(question)
    assert row.status == Question.Status.CANCELLED
    assert row.answer and ANSWER.startswith(row.answer) and row.answer != ANSWER
    assert row.completion_tokens == len(row.answer.split())
    assert row.prompt_tokens and row.prompt_tokens > 0
    assert fake_llm.calls == 1
    wait_until(lambda: queues.depth() == EMPTY, timeout=10, what="the message to be acknowledged")
    assert worker.process.poll() is None


def test_a_job_cancelled_while_queued_is_never_sent_to_the_llm(
    user, queues, fake_llm, worker_process
):
    question, _ = question_create(owner=user, text="Never mind?")
    Question.objects.filter(pk=question.pk).update(status="cancelled", finished_at=Now())

    worker = worker_process("--visibility-timeout=5", "--burst", env=ENV)
    assert worker.wait(timeout=30) == 0, worker.output

    assert fake_llm.calls == 0
    assert reloaded(question).status == Question.Status.CANCELLED
    assert queues.depth() == EMPTY
    assert queues.dlq_messages() == []


def test_the_demo_model_streams_word_by_word_and_says_it_is_not_an_llm(
    user, queues, worker_process
):
    question, _ = question_create(owner=user, text="Who are you?")

    worker = worker_process(
        "--visibility-timeout=5",
        "--burst",
        env={**ENV, "OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""},
    )
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert row.status == Question.Status.SUCCEEDED
    assert "not from a real LLM" in row.answer
    items = entries(question)
    assert text_of(items) == row.answer
    assert sum(kind == "delta" for kind, _ in items) >= 5
    assert items[-1] == ("end", "succeeded")
