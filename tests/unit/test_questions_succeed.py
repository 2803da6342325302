"""questions.services.questions_succeed on the real PostgreSQL: a batch of answers stored in one
transaction with a number of statements that does not grow with the batch, each fenced on its
own claim, each call costed once."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from functools import partial

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from questions.llm.client import Completion
from questions.models import LLMCall, Question, WebhookDelivery, WebhookEndpoint
from questions.pricing import completion_cost
from questions.services import PaidAnswer, question_claim, questions_succeed
from questions.webhooks.services import webhook_delivery_enqueue
from questions.webhooks.signing import secret_encrypt, secret_generate
from tests.factories import QuestionFactory, UserFactory, reloaded

pytestmark = pytest.mark.django_db

Status = Question.Status
COMPLETION = Completion(text="Paris.", model="gpt-4o-mini", prompt_tokens=12, completion_tokens=3)
COST = completion_cost(model="gpt-4o-mini", prompt_tokens=12, completion_tokens=3)


def claimed(**fields: object) -> Question:
    question = question_claim(question_id=QuestionFactory(**fields).pk, lease_seconds=30).question
    assert question is not None
    return question


def answer(question: Question, call_id: uuid.UUID | None = None, **changes: object) -> PaidAnswer:
    completion = dataclasses.replace(COMPLETION, **changes) if changes else COMPLETION
    return PaidAnswer(question=question, completion=completion, call_id=call_id or uuid.uuid4())


def lost(question: Question) -> Question:
    """`question`'s claim lapsed and another worker claimed the job (attempt 2)."""
    Question.objects.filter(pk=question.pk).update(claim_expires_at=timezone.now() - timedelta(1))
    assert question_claim(question_id=question.pk, lease_seconds=30).question is not None
    return question


def test_a_batch_stores_every_answer_with_its_ledger_row_and_mirrors_the_rows():
    jobs = [claimed() for _ in range(3)]
    items = [answer(job, text=f"Answer {i}.") for i, job in enumerate(jobs)]

    assert questions_succeed(items=items) == [True, True, True]

    for i, job in enumerate(jobs):
        row = reloaded(job)
        assert (row.status, row.answer, row.error, row.claim_expires_at) == (
            Status.SUCCEEDED,
            f"Answer {i}.",
            "",
            None,
        )
        assert (row.model, row.prompt_tokens, row.completion_tokens) == ("gpt-4o-mini", 12, 3)
        assert row.cost == COST > 0 and row.finished_at is not None
        # The object holds what the row holds (the job cache is written from it).
        for name in ("status", "answer", "model", "cost", "finished_at", "claim_expires_at"):
            assert getattr(job, name) == getattr(row, name), name
    calls = LLMCall.objects.order_by("attempt")
    assert sorted(calls.values_list("id", flat=True)) == sorted(item.call_id for item in items)
    assert {(c.question_id, c.outcome, c.attempt, c.cost) for c in calls} == {
        (job.pk, "succeeded", 1, COST) for job in jobs
    }


def test_the_statements_of_a_batch_do_not_grow_with_its_size():
    def statements(size: int) -> int:
        items = [answer(claimed()) for _ in range(size)]
        with CaptureQueriesContext(connection) as queries:
            assert questions_succeed(items=items) == [True] * size
        return len(queries.captured_queries)

    one, fifty = statements(1), statements(50)

    assert one == fifty
    # A savepoint and its release (the test's transaction) and the statement: with no webhook
    # endpoint, the statement's answer says so and the endpoints are not queried.
    assert one == 3


def test_a_lost_claim_in_a_batch_stores_nothing_but_its_call_is_paid_and_costed():
    kept, stale = claimed(), claimed()
    lost(stale)

    assert questions_succeed(items=[answer(kept), answer(stale)]) == [True, False]

    assert reloaded(kept).status == Status.SUCCEEDED
    row = reloaded(stale)
    assert (row.status, row.attempts, row.answer) == (Status.RUNNING, 2, "")
    assert row.cost == COST == stale.cost
    assert stale.status == Status.RUNNING  # nothing but the cost mirrored
    call = LLMCall.objects.get(question=stale)
    assert (call.attempt, call.outcome, call.cost) == (1, "succeeded", COST)


def test_an_answer_stored_again_with_its_call_id_is_costed_once():
    job = claimed()
    call_id = uuid.uuid4()
    lost(job)
    # Attempt 1 lost its claim: the call is costed, the answer stashed for attempt 2.
    assert questions_succeed(items=[answer(job, call_id)]) == [False]
    attempt_2 = Question.objects.get(pk=job.pk)

    # Attempt 2 finishes the job from the stash: the same call, written again.
    assert questions_succeed(items=[answer(attempt_2, call_id)]) == [True]
    # And a store retried after it committed (its reply lost) changes nothing.
    assert questions_succeed(items=[answer(attempt_2, call_id)]) == [False]

    row = reloaded(job)
    assert (row.status, row.answer, row.cost) == (Status.SUCCEEDED, "Paris.", COST)
    assert attempt_2.cost == COST
    assert list(LLMCall.objects.values_list("id", "cost")) == [(call_id, COST)]


def test_two_attempts_of_one_job_in_a_batch_each_cost_their_call():
    stale = claimed()
    lost(stale)
    current = Question.objects.get(pk=stale.pk)

    assert questions_succeed(items=[answer(stale), answer(current, text="Second.")]) == [
        False,
        True,
    ]

    row = reloaded(current)
    assert (row.status, row.attempts, row.answer, row.cost) == (
        Status.SUCCEEDED,
        2,
        "Second.",
        2 * COST,
    )
    assert LLMCall.objects.filter(question=row).count() == 2


def test_a_call_id_twice_in_one_batch_is_refused():
    job = claimed()
    call_id = uuid.uuid4()

    with pytest.raises(ValueError, match="once per batch"):
        questions_succeed(items=[answer(job, call_id), answer(job, call_id)])

    assert reloaded(job).status == Status.RUNNING
    assert not LLMCall.objects.exists()


def test_an_answer_postgresql_cannot_take_is_cleaned_first():
    job = claimed()

    assert questions_succeed(items=[answer(job, text="Pa\x00ris.\ud800", model="m\x00" * 300)])

    row = reloaded(job)
    assert row.answer == "Paris.\ufffd"
    assert row.model == LLMCall.objects.get().model == "m" * 200


def test_the_webhook_endpoint_of_one_owner_gets_its_delivery_after_the_commit(
    django_capture_on_commit_callbacks,
):
    hooked, other = UserFactory(), UserFactory()
    endpoint = WebhookEndpoint.objects.create(
        owner=hooked,
        url="https://hooks.example.com/questions",
        events=["question.succeeded"],
        secret_encrypted=secret_encrypt(secret_generate()),
    )
    WebhookEndpoint.objects.create(
        owner=other,
        url="https://hooks.example.com/failures",
        events=["question.failed"],
        secret_encrypted=secret_encrypt(secret_generate()),
    )
    mine, theirs = claimed(owner=hooked), claimed(owner=other)

    with django_capture_on_commit_callbacks() as callbacks:
        assert questions_succeed(items=[answer(theirs), answer(mine)]) == [True, True]

    delivery = WebhookDelivery.objects.get()
    assert (delivery.endpoint_id, delivery.question_id, delivery.event) == (
        endpoint.pk,
        mine.pk,
        "question.succeeded",
    )
    assert '"status":"succeeded"' in delivery.payload
    sends = [
        cb for cb in callbacks if isinstance(cb, partial) and cb.func is webhook_delivery_enqueue
    ]
    assert [send.keywords for send in sends] == [{"delivery_id": delivery.pk}]
