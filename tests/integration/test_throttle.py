"""Cost control on the page and the API alike: a per-user rate limit and a maximum length."""

from __future__ import annotations

import re

import pytest

from questions.models import Question
from tests.support import api_ask, assert_json_error, page_ask

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_per_minute(settings):
    settings.QUESTIONS_THROTTLE_RATE = "2/minute"


@pytest.mark.usefixtures("two_per_minute")
def test_the_page_refuses_the_third_question_in_a_minute_with_a_clear_message(page):
    assert page_ask(page, "one").status_code == 302
    assert page_ask(page, "two").status_code == 302

    response = page_ask(page, "three, please")
    assert response.status_code == 429
    content = response.content.decode()
    assert "Too many questions: you may ask 2 per minute, and each question costs money" in content
    assert re.search(r"try again in about \d+ seconds", content)
    assert ">three, please</textarea>" in content  # the question is not lost
    assert Question.objects.count() == 2


@pytest.mark.usefixtures("two_per_minute")
def test_the_api_refuses_the_third_question_in_a_minute_with_429_json(api):
    assert api_ask(api, "one").status_code == 202
    assert api_ask(api, "two").status_code == 202

    response = api_ask(api, "three")
    body = assert_json_error(response, 429, "throttled")
    assert body["detail"].startswith("Too many questions: you may ask 2 per minute")
    assert 0 < body["retry_after"] <= 60
    assert int(response["Retry-After"]) > 0
    assert Question.objects.count() == 2


@pytest.mark.usefixtures("two_per_minute")
def test_the_page_and_the_api_share_one_budget_per_user(page, api, api_for, other_user):
    assert page_ask(page, "page one").status_code == 302
    assert api_ask(api, "api one").status_code == 202
    assert page_ask(page, "page two").status_code == 429
    assert api_ask(api, "api two").status_code == 429
    # Another user has a budget of their own.
    assert api_ask(api_for(other_user), "mine").status_code == 202
    assert Question.objects.count() == 3


@pytest.mark.usefixtures("two_per_minute")
def test_reading_is_not_throttled(page, api):
    for _ in range(4):
        assert page.get("/").status_code == 200
        assert api.get("/api/questions/").status_code == 200
    assert api_ask(api, "still allowed").status_code == 202


def test_the_page_refuses_a_question_over_the_length_limit(page, settings):
    settings.QUESTIONS_MAX_LENGTH = 20
    form = page.get("/").content.decode()
    assert "Up to 20 characters." in form

    response = page_ask(page, "x" * 21)
    assert response.status_code == 400
    content = response.content.decode()
    assert "The question is 21 characters long; the limit is 20." in content
    assert 'aria-invalid="true"' in content
    assert not Question.objects.exists()

    assert page_ask(page, "x" * 20).status_code == 302
    assert Question.objects.count() == 1


def test_the_api_refuses_a_question_over_the_length_limit_with_400_json(api, settings):
    settings.QUESTIONS_MAX_LENGTH = 20

    response = api_ask(api, "x" * 21)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert body["fields"]["question"] == ["The question is 21 characters long; the limit is 20."]
    assert not Question.objects.exists()

    assert api_ask(api, "x" * 20).status_code == 202
