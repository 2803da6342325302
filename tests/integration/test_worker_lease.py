"""A claimed job holds its lease from its claim to its end, whatever it waits on (the provider's
rate limit included), Stop reaches it there, and the claim is checked again right before paying.

`run_sqs_worker` runs as a real subprocess against the real PostgreSQL, Redis, SQS server and the
OpenAI-wire test server. The numbers are scaled down from the production scenario (a 45 s
provider pause, a 15 s lease): a 429 with Retry-After 12 s, a 4 s lease (OPENAI_TIMEOUT 3 +
QUESTIONS_CLAIM_MARGIN 1) and a requeue sweep every second that takes any claim expired for a
second (QUESTIONS_REQUEUE_AFTER=1).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db.models import F
from django.db.models.functions import Now

from questions.answer_stream import _stash_key
from questions.live.streams import stream_key
from questions.models import Question
from questions.services import question_cancel, question_create, question_enqueue
from tests.factories import reloaded
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PAUSE = 12  # the provider's Retry-After, seconds
SWEEP = {"QUESTIONS_REQUEUE_AFTER": "1"}
WORKER = ("--concurrency=10", "--visibility-timeout=5", "--requeue-interval=1")


def asked(fake_llm: Any) -> Counter[str]:
    """How often each question was sent to the LLM."""
    return Counter(request["messages"][-1]["content"] for request in fake_llm.requests)


def stream_entries(settings: Any, question: Question) -> list[tuple[str, str]]:
    raw = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).xrange(
        stream_key(question.pk)
    )
    return [(k.decode(), v.decode()) for _id, fields in raw for k, v in fields.items()]


@pytest.fixture
def short_lease(settings: Any, fake_llm: Any) -> None:
    settings.OPENAI_TIMEOUT = 3.0
    settings.QUESTIONS_CLAIM_MARGIN = 1  # a 4 s lease: a third of the 12 s pause


def pause_the_provider(user: Any, fake_llm: Any) -> Question:
    """The first call gets a 429 with Retry-After: every process pauses `PAUSE` seconds."""
    fake_llm.enqueue({"status": 429, "retry_after": PAUSE})
    first, _ = question_create(owner=user, text="Question 0?")
    wait_until(lambda: fake_llm.calls == 1, timeout=30, what="the 429")
    return first


def test_jobs_waiting_out_a_provider_pause_keep_their_lease_and_pay_once(
    user, queues, fake_llm, short_lease, worker_process
):
    worker_process(*WORKER, env=SWEEP)
    first = pause_the_provider(user, fake_llm)
    waiting = [question_create(owner=user, text=f"Question {i}?")[0] for i in range(1, 6)]
    jobs = [first, *waiting]

    wait_until(
        lambda: all(reloaded(job).status == "succeeded" for job in jobs),
        timeout=60,
        what="every job succeeded",
    )
    wait_until(lambda: fake_llm.in_flight == 0, what="no call in flight")
    # Each job paid exactly once; the first also got the 429 (a refused call costs nothing).
    counts = asked(fake_llm)
    assert counts == {job.text: 2 if job == first else 1 for job in jobs}, counts
    assert fake_llm.calls == 6 + 1
    # No claim lapsed during the wait: no job was claimed twice (the 429 gives its attempt back).
    assert [reloaded(job).attempts for job in jobs] == [1] * 6


def test_stop_during_the_wait_cancels_without_a_call_and_a_stolen_claim_is_not_paid(
    user, queues, fake_llm, short_lease, worker_process, settings
):
    worker = worker_process(*WORKER)
    first = pause_the_provider(user, fake_llm)
    stopped, _ = question_create(owner=user, text="Stop me while I wait?")
    stolen, _ = question_create(owner=user, text="Claimed by another worker?")
    wait_until(
        lambda: reloaded(stopped).status == reloaded(stolen).status == "running",
        timeout=10,
        what="both jobs claimed, waiting for the provider",
    )

    # Stop reaches a job waiting for the provider: it ends at once, well before the pause does.
    question_cancel(question=reloaded(stopped))
    wait_until(
        lambda: ("end", "cancelled") in stream_entries(settings, stopped),
        timeout=5,  # the pause lasts 12 s from the 429
        what="the stopped job's end in its stream",
    )
    # Another worker claims the second one meanwhile (as after a lapsed lease): this worker
    # must not pay for it when the pause ends.
    Question.objects.filter(pk=stolen.pk).update(
        attempts=F("attempts") + 1, claim_expires_at=Now() + timedelta(seconds=120)
    )

    wait_until(lambda: reloaded(first).status == "succeeded", timeout=40, what="the first job")
    wait_until(
        lambda: "lost the claim while waiting; not calling" in worker.output,
        timeout=10,
        what="the stolen job given up before its call",
    )
    wait_until(lambda: fake_llm.in_flight == 0, what="no call in flight")
    assert asked(fake_llm) == {first.text: 2}
    row = reloaded(stopped)
    assert (row.status, row.answer, row.cost) == ("cancelled", "", None)  # no call: no cost
    assert reloaded(stolen).status == "running"  # the other worker's, untouched


def test_an_answer_whose_claim_was_lost_keeps_its_stash_for_the_next_claim(
    user, queues, fake_llm, worker_process, settings
):
    fake_llm.configure(answer="one two three four five six", stream_interval=0.3)
    question, _ = question_create(owner=user, text="Lost and found?")
    worker = worker_process("--visibility-timeout=5", "--requeue-interval=0")
    wait_until(lambda: fake_llm.in_flight == 1, timeout=20, what="the call")
    # The sweep takes the job back mid-call (its lease lapsed while the database was away).
    Question.objects.filter(pk=question.pk).update(status="queued", claim_expires_at=None)
    wait_until(
        lambda: "lost the claim on a job" in worker.output, timeout=20, what="the lost store"
    )
    key = _stash_key(question.pk)
    assert redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).exists(key)
    # No `end` for an outcome that is not final: watchers keep reading the job's stream.
    assert not [e for e in stream_entries(settings, question) if e[0] == "end"]

    question_enqueue(question_id=question.pk)  # as the sweep resends it
    wait_until(lambda: reloaded(question).status == "succeeded", timeout=20, what="the job")
    row = reloaded(question)
    assert (row.answer, row.attempts) == ("one two three four five six", 2)
    assert fake_llm.calls == 1  # finished from the stash: paid once
    assert [e for e in stream_entries(settings, question) if e[0] == "end"] == [
        ("end", "succeeded")
    ]
