"""The limits on asking (questions.limits through questions.services.question_create): the rate
with Redis up and down, unfinished jobs, the daily budget, per-user quotas — the same for the
API (429 JSON + Retry-After) and the page (429, in words). A refused question is not recorded
and nothing is enqueued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from questions.limits import utc_day_start
from questions.models import LLMCall, Question, UserQuota
from questions.pricing import worst_case_cost
from tests.factories import QuestionFactory
from tests.support import api_ask, assert_json_error, free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_down(settings):
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }


# --- the rate ------------------------------------------------------------------------------


@pytest.mark.usefixtures("redis_down")
def test_with_redis_down_the_rate_is_counted_in_postgresql(api, user, settings, queues):
    settings.QUESTIONS_THROTTLE_RATE = "2/minute"
    assert api_ask(api, "one").status_code == 202
    assert api_ask(api, "two").status_code == 202

    response = api_ask(api, "three")

    body = assert_json_error(response, 429, "throttled")
    assert "you may ask 2 per minute" in body["detail"]
    assert 0 < body["retry_after"] <= 60
    assert response["Retry-After"] == str(body["retry_after"])
    assert Question.objects.filter(owner=user).count() == 2
    assert queues.depth()["visible"] == 2


@pytest.mark.usefixtures("redis_down")
def test_with_redis_down_questions_older_than_the_window_do_not_count(api, user, settings, queues):
    settings.QUESTIONS_THROTTLE_RATE = "2/minute"
    QuestionFactory.create_batch(
        2, owner=user, status="succeeded", created_at=timezone.now() - timedelta(seconds=61)
    )
    assert api_ask(api).status_code == 202


def test_a_question_refused_for_another_limit_gives_its_rate_slot_back(api, user, settings, queues):
    settings.QUESTIONS_THROTTLE_RATE = "2/minute"
    settings.QUESTIONS_MAX_OPEN_PER_USER = 1
    first = api_ask(api, "one")
    assert first.status_code == 202
    assert api_ask(api, "two").json()["error"] == "too_many_open_jobs"
    Question.objects.filter(pk=first.json()["id"]).update(status="succeeded")

    assert api_ask(api, "three").status_code == 202  # the refused one did not use the 2nd slot
    assert api_ask(api, "four").json()["error"] == "throttled"


def test_an_idempotent_replay_is_not_counted(api, settings, queues):
    settings.QUESTIONS_THROTTLE_RATE = "1/minute"
    assert api_ask(api, HTTP_IDEMPOTENCY_KEY="k1").status_code == 202
    replay = api_ask(api, HTTP_IDEMPOTENCY_KEY="k1")
    assert replay.status_code == 202
    assert replay["Idempotent-Replayed"] == "true"
    assert Question.objects.count() == 1


# --- unfinished jobs -----------------------------------------------------------------------


def test_unfinished_jobs_are_capped(api, user, settings, queues):
    settings.QUESTIONS_MAX_OPEN_PER_USER = 2
    QuestionFactory(owner=user, status="running")
    assert api_ask(api, "one").status_code == 202

    response = api_ask(api, "two")

    body = assert_json_error(response, 429, "too_many_open_jobs")
    assert "2 questions waiting for an answer; the limit is 2 at once" in body["detail"]
    assert int(response["Retry-After"]) > 0
    assert Question.objects.filter(owner=user).count() == 2
    assert queues.depth()["visible"] == 1
    # Finished jobs do not count.
    Question.objects.filter(owner=user, status="running").update(status="failed")
    assert api_ask(api, "three").status_code == 202


def test_a_users_quota_overrides_the_cap(api, user, other_user, api_for, settings, queues):
    settings.QUESTIONS_MAX_OPEN_PER_USER = 1
    UserQuota.objects.create(user=user, max_open_jobs=3)
    for n in range(3):
        assert api_ask(api, f"q{n}").status_code == 202
    assert api_ask(api, "q3").status_code == 429
    other = api_for(other_user)
    assert api_ask(other, "mine").status_code == 202
    assert api_ask(other, "mine too").status_code == 429


# --- the daily budget ----------------------------------------------------------------------


def test_a_user_over_budget_gets_429_until_midnight_utc_and_nothing_is_enqueued(
    api, user, settings, queues
):
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal("0.50")
    QuestionFactory(owner=user, status="succeeded", cost=Decimal("0.499999"))

    response = api_ask(api)

    body = assert_json_error(response, 429, "budget_exceeded")
    assert "daily budget of $0.50" in body["detail"]
    assert "midnight UTC" in body["detail"]
    now = datetime.now(UTC)
    until_midnight = (utc_day_start(now) + timedelta(days=1) - now).total_seconds()
    assert abs(int(response["Retry-After"]) - until_midnight) <= 5
    assert Question.objects.filter(owner=user).count() == 1
    assert queues.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_yesterdays_spend_does_not_count(api, user, settings, queues):
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal("0.50")
    yesterday = utc_day_start(timezone.now()) - timedelta(minutes=1)
    QuestionFactory(owner=user, status="succeeded", cost=Decimal("0.50"), created_at=yesterday)
    assert api_ask(api).status_code == 202


def test_unfinished_jobs_count_at_their_worst_case(api, user, settings, queues):
    text = "x" * 100
    # Each question may make QUESTIONS_MAX_ATTEMPTS calls: all of them are reserved.
    one = worst_case_cost(question_bytes=len(text)) * settings.QUESTIONS_MAX_ATTEMPTS
    settings.QUESTIONS_DAILY_BUDGET_USD = one * 2
    assert api_ask(api, text).status_code == 202
    assert api_ask(api, text).status_code == 202
    # Two unfinished questions reserve the whole budget; a third could pass it.
    assert api_ask(api, text).json()["error"] == "budget_exceeded"
    # Once they are answered, their real (smaller) cost is what counts: the ledger's.
    for job in Question.objects.filter(owner=user):
        Question.objects.filter(pk=job.pk).update(status="succeeded", attempts=1)
        LLMCall.objects.create(
            question=job, user=user, model="gpt-4o-mini", outcome="succeeded", cost=one / 4
        )
    assert api_ask(api, text).status_code == 202


def test_a_users_quota_overrides_the_budget(api, user, settings, queues):
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal(100)
    quota = UserQuota.objects.create(user=user, daily_budget_usd=Decimal(0))
    assert api_ask(api).json()["error"] == "budget_exceeded"
    quota.daily_budget_usd = None  # back to the default
    quota.save()
    assert api_ask(api).status_code == 202


def test_the_page_says_why_a_question_is_refused_and_keeps_it(page, user, settings, queues):
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal("0.01")
    QuestionFactory(owner=user, status="succeeded", cost=Decimal("0.01"))

    response = page.post("/", {"question": "Is my budget gone?"})

    assert response.status_code == 429
    content = response.content.decode()
    assert "would pass your daily budget of $0.01" in content
    assert "The budget starts afresh at midnight UTC." in content
    assert ">Is my budget gone?</textarea>" in content
    assert Question.objects.filter(owner=user).count() == 1
    assert queues.depth()["visible"] == 0


def test_concurrent_retries_with_one_key_replay_instead_of_hitting_the_cap(
    api_for, user, settings, queues
):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    settings.QUESTIONS_MAX_OPEN_PER_USER = 1

    def ask(_: int) -> int:
        try:
            return api_ask(api_for(user), "once", HTTP_IDEMPOTENCY_KEY="same").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(ask, range(8)))
    assert statuses == [202] * 8  # one recorded, seven replays; none refused by the cap
    assert Question.objects.filter(owner=user).count() == 1
    assert queues.depth()["visible"] == 1
