"""questions.selectors called directly, on the real PostgreSQL and Redis."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser

from questions.models import Question
from questions.selectors import (
    question_get,
    question_list,
    question_status_counts,
    questions_cancelled_among,
    user_spend_list,
)
from tests.factories import QuestionFactory

pytestmark = pytest.mark.django_db

Status = Question.Status


def test_a_job_is_visible_to_its_owner_and_staff_only(user, other_user, staff_user):
    question = QuestionFactory(owner=user)

    assert question_get(question_id=question.pk, user=user) == question
    assert question_get(question_id=question.pk, user=staff_user) == question
    assert question_get(question_id=question.pk, user=other_user) is None
    assert question_get(question_id=question.pk, user=AnonymousUser()) is None


def test_a_cached_finished_job_keeps_its_owner_check(user, other_user, django_assert_num_queries):
    question = QuestionFactory(owner=user, status=Status.SUCCEEDED, answer="Paris.")
    question_get(question_id=question.pk, user=user)  # caches it

    with django_assert_num_queries(0):
        assert question_get(question_id=question.pk, user=user).answer == "Paris."
        assert question_get(question_id=question.pk, user=other_user) is None


def test_the_list_is_the_users_own_newest_first_and_staff_see_all(user, other_user, staff_user):
    first, second = QuestionFactory(owner=user), QuestionFactory(owner=user)
    theirs = QuestionFactory(owner=other_user)

    assert list(question_list(user=user)) == [second, first]
    assert set(question_list(user=staff_user)) == {first, second, theirs}
    assert list(question_list(user=staff_user, owner_id=other_user.pk)) == [theirs]


def test_the_list_filters_by_status_and_searches_question_and_answer(user):
    done = QuestionFactory(owner=user, text="Capital of France?", status=Status.SUCCEEDED)
    QuestionFactory(owner=user, text="Capital of Spain?")
    answered = QuestionFactory(owner=user, text="Anything?", answer="France, surely")

    assert list(question_list(user=user, status=Status.SUCCEEDED)) == [done]
    assert set(question_list(user=user, search="france")) == {done, answered}


def test_status_counts_name_every_status_and_the_oldest_waiting_job():
    assert question_status_counts() == {
        **dict.fromkeys(Status.values, 0),
        "oldest_waiting_seconds": None,
    }
    QuestionFactory.create_batch(2)
    QuestionFactory(status=Status.FAILED)

    counts = question_status_counts()

    assert (counts["queued"], counts["failed"], counts["succeeded"]) == (2, 1, 0)
    assert counts["oldest_waiting_seconds"] >= 0


def test_cancelled_among_picks_the_cancelled_jobs_only():
    stopped = QuestionFactory(status=Status.CANCELLED)
    running = QuestionFactory(status=Status.RUNNING)

    assert questions_cancelled_among(question_ids=[stopped.pk, running.pk]) == {stopped.pk}


def test_spend_adds_up_each_users_costs_most_spent_first(user, other_user):
    QuestionFactory(owner=user, cost=Decimal("0.010"))
    QuestionFactory(owner=user, cost=Decimal("0.005"))
    QuestionFactory(owner=other_user, cost=Decimal("0.100"))

    rows = [(row.pk, row.spend_today, row.questions_30_days) for row in user_spend_list()]

    assert rows == [
        (other_user.pk, Decimal("0.100"), 1),
        (user.pk, Decimal("0.015"), 2),
    ]
