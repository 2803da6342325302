"""`question_answer`, the job's run and its retry policy, called directly (no queue, no worker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import timedelta

import pytest
import redis
from asgiref.sync import async_to_sync
from django.utils import timezone

from questions.answer_stream import (
    FLUSH_SECONDS,
    LiveAnswer,
    reset_breakers,
    stash_drop,
    stash_get,
    stash_put,
)
from questions.answering import question_answer
from questions.job_cache import job_cache_get, job_to_json
from questions.live.streams import stream_key
from questions.llm.client import Completion
from questions.models import Question
from questions.sqs.exceptions import DeadLetter, RetryLater
from questions.worker.coalesce import Coalescer
from questions.worker.runtime import WorkerRuntime
from tests.factories import QuestionFactory, reloaded
from tests.support import answer_job

pytestmark = pytest.mark.django_db(transaction=True)

answer = answer_job


def test_a_queued_job_is_answered_once_and_a_second_delivery_is_a_duplicate(user, fake_llm):
    fake_llm.configure(answer="Forty-two.")
    question = QuestionFactory(owner=user)

    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"
    assert answer(job_id=str(question.pk), max_attempts=3) == "duplicate"

    row = reloaded(question)
    assert (row.status, row.answer, row.attempts) == ("succeeded", "Forty-two.", 1)
    assert fake_llm.calls == 1


def test_a_5xx_is_retried_until_max_attempts_then_fails(user, fake_llm):
    fake_llm.configure(always={"status": 503})
    question = QuestionFactory(owner=user)

    with pytest.raises(RetryLater):
        answer(job_id=str(question.pk), max_attempts=2)
    assert reloaded(question).status == Question.Status.QUEUED
    assert answer(job_id=str(question.pk), max_attempts=2) == "failed"

    row = reloaded(question)
    assert row.attempts == 2 and "Gave up after 2 attempts" in row.error
    assert fake_llm.calls == 2


def test_a_429_gives_the_attempt_back_and_gives_up_only_after_the_queue_limit(
    user, fake_llm, settings
):
    fake_llm.configure(always={"status": 429, "retry_after": 0})
    question = QuestionFactory(owner=user)

    for _ in range(3):
        with pytest.raises(RetryLater):
            answer(job_id=str(question.pk), max_attempts=1)
    assert reloaded(question).attempts == 0

    settings.QUESTIONS_MAX_QUEUE_SECONDS = 0
    Question.objects.filter(pk=question.pk).update(
        created_at=question.created_at.replace(year=question.created_at.year - 1)
    )
    assert answer(job_id=str(question.pk), max_attempts=1) == "failed"
    row = reloaded(question)
    assert "rate limit" in row.error and row.attempts == 1
    assert fake_llm.calls == 4


def test_messages_that_name_no_job_are_dead_letters(db):
    with pytest.raises(DeadLetter):
        answer(job_id="not-a-uuid", max_attempts=1)


def test_a_job_claimed_again_with_a_stashed_answer_is_finished_from_it_without_a_call(
    user, fake_llm
):
    # Its worker was paid for the answer, then lost PostgreSQL before storing it, and died.
    question = QuestionFactory(
        owner=user,
        status=Question.Status.RUNNING,
        attempts=1,
        claim_expires_at=timezone.now() - timedelta(seconds=1),
    )
    paid = Completion(
        text="Already paid for.", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=3
    )
    async_to_sync(stash_put)(question.pk, 1, paid)

    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"

    row = reloaded(question)
    assert (row.answer, row.attempts, row.completion_tokens) == ("Already paid for.", 2, 3)
    assert fake_llm.calls == 0


def test_a_lone_surrogate_in_a_streamed_answer_is_stored_cleaned_after_one_call(user, fake_llm):
    # The provider's JSON escapes a lone surrogate ("\ud800"): it decodes to a str that cannot
    # be encoded as UTF-8, so PostgreSQL (and Redis) refuse it with a UnicodeEncodeError.
    fake_llm.configure(answer="Half \ud800 half", stream_interval=0.05)
    question = QuestionFactory(owner=user)

    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"

    row = reloaded(question)
    assert (row.status, row.answer, row.attempts) == ("succeeded", "Half \ufffd half", 1)
    assert fake_llm.calls == 1


def test_a_failing_live_stream_does_not_stop_paid_answers_from_being_stashed(user, settings):
    question = QuestionFactory(owner=user)
    # The job's stream key holds a string: Redis refuses every XADD to it (WRONGTYPE), so the
    # live stream's breaker opens, as in a Redis outage that only the live view sees.
    redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).set(
        stream_key(question.pk), "not a stream"
    )
    paid = Completion(text="Paid for.", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=2)

    async def run(*, stream_down_first: bool) -> Completion | None:
        live = LiveAnswer(question.pk)
        if stream_down_first:
            live.start(1)  # fails (settle waits for it): the live stream's breaker opens
        live.add("Paid for.")
        # The rest of the text and the stash go in one pipeline: the XADD fails, the SET not.
        await live.settle(1, paid)
        return await stash_get(question.pk)

    try:
        for stream_down_first in (False, True):
            reset_breakers()
            assert async_to_sync(run)(stream_down_first=stream_down_first) == paid
            async_to_sync(stash_drop)(question.pk)
    finally:
        reset_breakers()


def test_settle_streams_the_rest_of_the_text_once_and_stashes_the_answer(user, settings):
    """A call ends before the flush its last piece asked for has started: settle() sends that
    text (with the stash, in one round trip), and the flush due finds nothing left to send."""
    question = QuestionFactory(owner=user)
    paid = Completion(text="Hello world", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=2)
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"], decode_responses=True)

    def deltas() -> list[str]:
        entries = client.xrange(stream_key(question.pk))
        return [fields["delta"] for _id, fields in entries if "delta" in fields]

    async def run() -> None:
        live = LiveAnswer(question.pk)
        live.start(1)
        await asyncio.sleep(FLUSH_SECONDS)  # the next piece asks for a flush at once
        live.add("Hello")
        deadline = time.monotonic() + 5
        while not deltas() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(FLUSH_SECONDS)
        live.add(" world")  # a flush is due, on the loop's next turn...
        await live.settle(1, paid)  # ...but the call ended first
        await asyncio.sleep(FLUSH_SECONDS)  # a flush still due would have run by now

    async_to_sync(run)()
    assert deltas() == ["Hello", " world"]
    assert async_to_sync(stash_get)(question.pk) == paid


def test_an_attempt_starts_without_waiting_and_still_comes_first_in_the_stream(user, settings):
    """`start` only sends the attempt's `reset` and `running` (the call does not wait a round
    trip for them); the text that follows at once is written after them all the same."""
    question = QuestionFactory(owner=user)
    paid = Completion(text="Hi there", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=2)
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"], decode_responses=True)

    async def run() -> None:
        live = LiveAnswer(question.pk)
        assert live.start(3) is None  # not a coroutine: nothing to wait for
        live.add("Hi")
        live.add(" there")
        await live.settle(3, paid)
        await live.finish("succeeded", drop_stash=True)

    async_to_sync(run)()
    entries = [fields for _id, fields in client.xrange(stream_key(question.pk))]
    assert entries == [
        {"reset": "3"},
        {"status": "running"},
        {"delta": "Hi there"},
        {"end": "succeeded"},
    ]


def test_jobs_settling_together_share_a_round_trip_but_not_their_errors(user, settings):
    """Two calls end in the same turn of the loop: their writes go in one pipeline, and the
    stream Redis refuses for one job (WRONGTYPE) fails only that job's entries."""
    broken, fine = QuestionFactory(owner=user), QuestionFactory(owner=user)
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"], decode_responses=True)
    client.set(stream_key(broken.pk), "not a stream")
    paid = Completion(text="Paid.", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=1)

    async def run() -> None:
        lives = [LiveAnswer(broken.pk), LiveAnswer(fine.pk)]
        for live in lives:
            live.add("Paid.")
        await asyncio.gather(*(live.settle(1, paid) for live in lives))

    try:
        async_to_sync(run)()
        assert async_to_sync(stash_get)(broken.pk) == paid
        assert async_to_sync(stash_get)(fine.pk) == paid
        entries = client.xrange(stream_key(fine.pk))
        assert [fields for _id, fields in entries] == [{"delta": "Paid."}]
        assert client.get(stream_key(broken.pk)) == "not a stream"
    finally:
        reset_breakers()


class BatchOf(WorkerRuntime):
    """The worker's runtime, its coalescers sending a batch once `size` calls wait (or after a
    second): jobs started together then surely store together."""

    def __init__(self, size: int) -> None:
        self.size = size

    def batcher[K: Hashable, V](
        self, batch: Callable[[Sequence[K]], Awaitable[dict[K, V]]]
    ) -> Callable[[K], Awaitable[V]]:
        return Coalescer(batch, window=1.0, max_size=self.size)


def stashed_job(owner: object, completion: Completion) -> Question:
    """A job whose worker was paid for `completion` and died before storing it."""
    question = QuestionFactory(
        owner=owner,
        status=Question.Status.RUNNING,
        attempts=1,
        claim_expires_at=timezone.now() - timedelta(seconds=1),
    )
    async_to_sync(stash_put)(question.pk, 1, completion)
    return question


def test_answers_stored_in_one_batch_fail_only_the_job_whose_answer_postgresql_refuses(
    user, fake_llm
):
    paid = Completion(text="Paid.", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=3)
    good = [stashed_job(user, paid) for _ in range(3)]
    # More tokens than the column holds: PostgreSQL refuses the batch (a DataError).
    bad = stashed_job(user, Completion("Paid.", "gpt-4o-mini", 5, 3_000_000_000))
    jobs = [*good, bad]
    runtime = BatchOf(len(jobs))

    async def run() -> list[str]:
        return await asyncio.gather(
            *(question_answer(job_id=str(job.pk), max_attempts=3, runtime=runtime) for job in jobs)
        )

    assert async_to_sync(run)() == ["succeeded"] * 3 + ["failed"]

    for job in good:
        row = reloaded(job)
        assert (row.status, row.answer, row.attempts, row.cost > 0) == (
            "succeeded",
            "Paid.",
            2,
            True,
        )
        # The cache holds the committed row, written with the end of the job's stream.
        cached = job_cache_get(job.pk)
        assert cached is not None and job_to_json(cached) == job_to_json(row)
        assert async_to_sync(stash_get)(job.pk) is None
    row = reloaded(bad)
    assert (row.status, row.answer) == ("failed", "")
    assert "could not be stored" in row.error
    assert fake_llm.calls == 0


def test_the_job_cache_is_written_even_when_the_live_stream_refuses_the_end(
    user, fake_llm, settings
):
    fake_llm.configure(answer="Cached all the same.")
    question = QuestionFactory(owner=user)
    # Every XADD to the job's stream fails (WRONGTYPE): the stream's breaker opens, the
    # cache's (another breaker, the same pipeline) does not.
    redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).set(
        stream_key(question.pk), "not a stream"
    )

    try:
        assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"
    finally:
        reset_breakers()

    cached = job_cache_get(question.pk)
    assert cached is not None
    assert (cached.status, cached.answer) == ("succeeded", "Cached all the same.")
    assert job_to_json(cached) == job_to_json(reloaded(question))
