"""questions.services called directly, on the real PostgreSQL: claims, leases and the fencing
that keeps a worker who lost its claim from storing a result."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from questions.llm.client import Completion
from questions.models import LLMCall, Question
from questions.services import (
    question_claim,
    question_fail,
    question_release_for_retry,
    question_succeed,
    questions_claim,
    questions_extend_leases,
)
from tests.factories import QuestionFactory, reloaded

pytestmark = pytest.mark.django_db

Status = Question.Status
COMPLETION = Completion(text="Paris.", model="gpt-4o-mini", prompt_tokens=12, completion_tokens=3)


def running(**fields: object) -> Question:
    """A job some worker is answering, its lease ending `claim_expires_at`."""
    return QuestionFactory(status=Status.RUNNING, attempts=1, started_at=timezone.now(), **fields)


def test_a_queued_job_is_claimed_once():
    question = QuestionFactory()

    claim = question_claim(question_id=question.pk, lease_seconds=30)

    assert claim.question is not None and claim.current is None
    question.refresh_from_db()
    assert question.status == Status.RUNNING
    assert question.attempts == 1
    assert question.started_at is not None
    assert question.claim_expires_at - question.started_at == timedelta(seconds=30)


def test_a_second_claim_of_the_same_job_gets_nothing_and_says_when_the_lease_ends():
    question = QuestionFactory()
    question_claim(question_id=question.pk, lease_seconds=30)

    again = question_claim(question_id=question.pk, lease_seconds=30)

    assert again.question is None
    assert again.current is not None and again.current.status == Status.RUNNING
    assert 25 < again.retry_in <= 30
    question.refresh_from_db()
    assert question.attempts == 1


def test_a_running_job_under_a_live_lease_is_not_taken():
    question = running(claim_expires_at=timezone.now() + timedelta(minutes=5))

    claim = question_claim(question_id=question.pk, lease_seconds=30)

    assert claim.question is None
    assert claim.retry_in > 60
    question.refresh_from_db()
    assert (question.status, question.attempts) == (Status.RUNNING, 1)


def test_a_running_job_whose_lease_expired_is_taken_as_a_new_attempt():
    question = running(claim_expires_at=timezone.now() - timedelta(minutes=5))

    claim = question_claim(question_id=question.pk, lease_seconds=30)

    assert claim.question is not None
    assert claim.question.attempts == 2
    question.refresh_from_db()
    assert question.claim_expires_at > timezone.now()


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_a_finished_job_is_never_claimed(status):
    question = QuestionFactory(status=status)

    claim = question_claim(question_id=question.pk, lease_seconds=30)

    assert claim.question is None
    assert claim.current is not None and claim.current.status == status
    assert claim.retry_in == 0.0


def test_claiming_a_job_that_does_not_exist_gets_nothing():
    claim = question_claim(question_id="00000000-0000-4000-8000-000000000000", lease_seconds=30)

    assert (claim.question, claim.current) == (None, None)


def test_a_batch_claim_takes_the_free_jobs_and_reports_on_the_others():
    free = QuestionFactory()
    leased = running(claim_expires_at=timezone.now() + timedelta(minutes=5))
    lapsed = running(claim_expires_at=timezone.now() - timedelta(seconds=1))
    done = QuestionFactory(status=Status.SUCCEEDED)
    missing = uuid.UUID("00000000-0000-4000-8000-000000000000")

    claims = questions_claim(
        question_ids=[free.pk, leased.pk, missing, free.pk, lapsed.pk, done.pk], lease_seconds=30
    )

    assert list(claims) == [free.pk, leased.pk, missing, lapsed.pk, done.pk]
    taken = claims[free.pk].question
    assert taken is not None and claims[free.pk].current is None
    assert (taken.status, taken.attempts, taken.text) == (Status.RUNNING, 1, free.text)
    # The row as the claim left it, with the database's clock at the claim.
    assert taken.started_at == taken.db_now
    assert taken.claim_expires_at == taken.db_now + timedelta(seconds=30)
    assert reloaded(free).claim_expires_at == taken.claim_expires_at
    assert claims[leased.pk].question is None and claims[leased.pk].retry_in > 60
    assert claims[leased.pk].current is not None
    assert claims[leased.pk].current.status == Status.RUNNING
    assert claims[lapsed.pk].question is not None
    assert reloaded(lapsed).attempts == lapsed.attempts + 1
    assert claims[done.pk].question is None
    assert claims[done.pk].current is not None and claims[done.pk].current.is_finished
    assert (claims[missing].question, claims[missing].current) == (None, None)
    assert reloaded(free).attempts == 1


def test_a_batch_of_free_jobs_is_claimed_in_one_statement():
    jobs = [QuestionFactory() for _ in range(5)]

    with CaptureQueriesContext(connection) as queries:
        claims = questions_claim(question_ids=[job.pk for job in jobs], lease_seconds=30)

    assert len(queries.captured_queries) == 1
    assert all(claims[job.pk].question is not None for job in jobs)
    assert Question.objects.filter(status=Status.RUNNING, attempts=1).count() == 5


def test_extending_leases_touches_only_running_jobs():
    soon = timezone.now() + timedelta(seconds=5)
    job = running(claim_expires_at=soon)
    done = QuestionFactory(status=Status.SUCCEEDED)

    extended = questions_extend_leases(question_ids=[job.pk, done.pk], lease_seconds=600)

    assert extended == 1
    job.refresh_from_db()
    assert job.claim_expires_at > soon + timedelta(minutes=5)


def test_a_worker_that_holds_the_claim_stores_the_answer_and_its_cost():
    question = question_claim(question_id=QuestionFactory().pk, lease_seconds=30).question

    assert question_succeed(question=question, completion=COMPLETION, call_id=uuid.uuid4())

    question.refresh_from_db()
    assert question.status == Status.SUCCEEDED
    assert (question.answer, question.prompt_tokens, question.completion_tokens) == (
        "Paris.",
        12,
        3,
    )
    assert question.cost > 0
    assert question.claim_expires_at is None and question.finished_at is not None
    # The cost is the ledger's: one row for the one call, in the same transaction.
    assert list(LLMCall.objects.values_list("question", "outcome", "cost")) == [
        (question.pk, "succeeded", question.cost)
    ]


def test_a_worker_that_lost_its_claim_stores_nothing():
    job = QuestionFactory()
    stale = question_claim(question_id=job.pk, lease_seconds=30).question
    Question.objects.filter(pk=job.pk).update(claim_expires_at=timezone.now() - timedelta(1))
    question_claim(question_id=job.pk, lease_seconds=30)  # another worker's attempt 2

    call_id = uuid.uuid4()
    assert question_succeed(question=stale, completion=COMPLETION, call_id=call_id) is False
    assert question_fail(question=stale, error="boom") is False

    job.refresh_from_db()
    assert (job.status, job.attempts, job.answer, job.error) == (Status.RUNNING, 2, "", "")
    # The call was paid all the same: it is in the ledger and the job's cost, once however
    # often it is written (a retried store, an answer finished from the stash).
    assert question_succeed(question=stale, completion=COMPLETION, call_id=call_id) is False
    assert LLMCall.objects.get().cost == job.cost > 0


def test_a_release_for_retry_queues_the_job_again_and_may_give_the_attempt_back():
    counted = question_claim(question_id=QuestionFactory().pk, lease_seconds=30).question
    given_back = question_claim(question_id=QuestionFactory().pk, lease_seconds=30).question

    assert question_release_for_retry(question=counted, error="timeout", retry_in=60)
    assert question_release_for_retry(question=given_back, error="429", count_attempt=False)

    counted.refresh_from_db()
    given_back.refresh_from_db()
    assert (counted.status, counted.attempts, counted.error) == (Status.QUEUED, 1, "timeout")
    assert counted.enqueued_at > timezone.now() + timedelta(seconds=50)
    assert (given_back.status, given_back.attempts) == (Status.QUEUED, 0)
    assert counted.claim_expires_at is None
