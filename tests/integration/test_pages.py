"""The server-rendered pages through Django's test client: accounts, ask, detail, live, history."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from questions.accounts import api_token_create
from questions.models import ApiToken, Question
from questions.web.rendering import render_markdown
from tests.factories import QuestionFactory, UserFactory

pytestmark = pytest.mark.django_db


# --- accounts -------------------------------------------------------------------------------


def test_the_demo_user_from_make_run_can_log_in_and_out():
    call_command("create_demo_user", stdout=StringIO())
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'<label for="id_username">Username</label>' in page.content
    csrf = page.cookies["csrftoken"].value

    response = client.post(
        "/accounts/login/",
        {"username": "demo", "password": "demo-password", "csrfmiddlewaretoken": csrf},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert b"Log out" in home.content

    csrf = client.cookies["csrftoken"].value
    response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf})
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_a_wrong_password_says_so_on_the_login_page():
    user = UserFactory()
    response = Client().post("/accounts/login/", {"username": user.username, "password": "nope"})
    assert response.status_code == 200
    assert b"did not match" in response.content
    assert b'aria-invalid="true"' in response.content


# A fixed job id, so that every parallel worker collects the same test ids (pytest-xdist).
@pytest.mark.parametrize(
    "path", ["/", "/questions/", f"/questions/{uuid.UUID(int=1)}/", "/account/token/"]
)
def test_pages_need_a_logged_in_user(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_forms_without_a_csrf_token_are_refused(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/", {"question": "Hello?"}).status_code == 403
    assert client.post("/account/token/").status_code == 403
    assert not Question.objects.exists()


def test_every_form_carries_a_csrf_token(user, client_for):
    client = client_for(user)
    for path in ("/", "/account/token/"):
        content = client.get(path).content.decode()
        for form in re.findall(r'<form method="post".*?</form>', content, re.S):
            assert 'name="csrfmiddlewaretoken"' in form, (path, form[:80])


def test_the_token_page_shows_a_new_token_once_lists_and_revokes_it(user, client_for):
    client = client_for(user)
    assert client.get("/account/token/").status_code == 200
    assert ApiToken.objects.filter(user=user).count() == 0

    made = client.post("/account/token/", {"name": "laptop script", "expires_in_days": "30"})
    assert made.status_code == 200
    assert "no-store" in made["Cache-Control"]  # never_cache: the key must not sit in a cache
    key = re.search(r'id="api-token" value="([^"]+)"', made.content.decode()).group(1)
    token = ApiToken.objects.get(user=user)
    assert token.name == "laptop script" and token.expires_at is not None
    assert key not in token.digest and key.startswith(token.prefix)

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/questions/").status_code == 200

    listed = client.get("/account/token/")
    assert "no-store" in listed["Cache-Control"]
    assert "laptop script" in listed.content.decode()
    assert key not in listed.content.decode()  # shown once, never again

    revoked = client.post("/account/token/", {"revoke": "1", "token_id": token.pk}, follow=True)
    assert b"no longer works" in revoked.content
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    assert api.get("/api/questions/").status_code == 401


def test_a_user_cannot_revoke_someone_elses_token(user, other_user, client_for):
    theirs = api_token_create(user=other_user, name="theirs").token
    response = client_for(user).post("/account/token/", {"revoke": "1", "token_id": theirs.pk})
    assert response.status_code == 404
    assert ApiToken.objects.filter(pk=theirs.pk).exists()


# --- ask ------------------------------------------------------------------------------------


def test_asking_records_the_question_and_shows_it_queued(user, client_for):
    client = client_for(user)
    page = client.get("/")
    request_id = re.search(r'name="request_id" value="([0-9a-f-]+)"', page.content.decode())[1]

    response = client.post("/", {"question": "  What is SQS?  ", "request_id": request_id})
    question = Question.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/questions/{question.pk}/"
    assert (question.owner, question.text, question.status) == (user, "What is SQS?", "queued")

    detail = client.get(response["Location"])
    assert b"Question received" in detail.content
    assert b"What is SQS?" in detail.content
    assert b'data-job-status="queued"' in detail.content
    # Without JavaScript (or its script) the page refreshes itself while the job runs, and
    # says so with a link; static/js/job.js cancels both.
    assert b'<meta http-equiv="refresh" content="3" data-server-refresh>' in detail.content
    assert b"Refresh now</a>" in detail.content


def test_submitting_the_same_form_twice_records_one_question(user, client_for):
    client = client_for(user)
    data = {"question": "Only once?", "request_id": str(uuid.uuid4())}
    first = client.post("/", data)
    second = client.post("/", data)
    assert first["Location"] == second["Location"]
    assert Question.objects.count() == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "The question may not be blank."), ("   \n ", "The question may not be blank.")],
)
def test_a_blank_question_is_refused_with_a_message(user, text, message, client_for):
    response = client_for(user).post("/", {"question": text})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert b'aria-invalid="true"' in response.content
    assert not Question.objects.exists()


def test_the_demo_banner_shows_only_with_the_demo_model(user, settings, client_for):
    client = client_for(user)
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = None
    assert b"offline demo model" in client.get("/").content
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    assert b"offline demo model" not in client.get("/").content


def test_ask_again_prefills_a_previous_question(user, client_for):
    question = QuestionFactory(owner=user, text="Try me again", finished=True, status="failed")
    page = client_for(user).get(f"/?again={question.pk}")
    assert ">Try me again</textarea>" in page.content.decode()
    assert client_for(UserFactory()).get(f"/?again={question.pk}").status_code == 200
    assert b"Try me again" not in client_for(UserFactory()).get(f"/?again={question.pk}").content
    assert client_for(user).get("/?again=not-a-uuid").status_code == 200


# --- detail and live ------------------------------------------------------------------------


def test_the_detail_page_shows_answer_model_timings_and_tokens(user, client_for):
    question = QuestionFactory(
        owner=user,
        text="Capital of France?",
        succeeded=True,
        answer="**Paris**, of course.",
        model="gpt-4o-mini",
        prompt_tokens=12,
        completion_tokens=7,
    )
    content = client_for(user).get(question.get_absolute_url()).content.decode()
    assert "<strong>Paris</strong>, of course." in content
    assert "gpt-4o-mini" in content
    assert "19 (12 in, 7 out)" in content
    assert "Answered" in content
    assert "2.0 s" in content
    assert 'http-equiv="refresh"' not in content  # finished: no self-refresh
    assert "Asked by" not in content  # the owner sees no owner column


def test_a_failed_job_shows_its_error_in_words(user, client_for):
    question = QuestionFactory(
        owner=user,
        finished=True,
        status="failed",
        error="The language model rejected the question as invalid.",
    )
    content = client_for(user).get(question.get_absolute_url()).content.decode()
    assert "We could not answer this question" in content
    assert "The language model rejected the question as invalid." in content
    assert f"?again={question.pk}" in content


def test_script_in_a_question_or_an_answer_is_not_markup(user, client_for):
    question = QuestionFactory(
        owner=user,
        text="<script>alert('q')</script> hi",
        succeeded=True,
        answer=(
            'Hi <script>alert("a")</script><img src=x onerror="alert(1)"> [x](javascript:alert(1))'
        ),
    )
    content = client_for(user).get(question.get_absolute_url()).content.decode()
    assert "<script>alert" not in content
    assert "&lt;script&gt;alert(&#x27;q&#x27;)&lt;/script&gt;" in content
    assert "onerror" not in content
    assert "javascript:" not in content


def test_another_users_question_is_404_not_403(user, other_user, client_for):
    question = QuestionFactory(owner=other_user)
    client = client_for(user)
    assert client.get(question.get_absolute_url()).status_code == 404
    live = client.get(f"/questions/{question.pk}/live/")
    assert live.status_code == 404
    assert live.json() == {"error": "not_found", "detail": "No such question."}
    assert client.get(f"/questions/{uuid.uuid4()}/").status_code == 404


def test_staff_see_anyones_question_with_its_owner(staff_user, other_user, client_for):
    question = QuestionFactory(owner=other_user)
    content = client_for(staff_user).get(question.get_absolute_url()).content.decode()
    assert "Asked by" in content
    assert other_user.username in content


def test_the_live_view_returns_status_and_the_sanitised_panel(user, client_for):
    question = QuestionFactory(owner=user)
    client = client_for(user)
    body = client.get(f"/questions/{question.pk}/live/").json()
    assert body["status"] == "queued"
    assert body["finished"] is False
    assert 'data-job-status="queued"' in body["html"]

    now = timezone.now()
    Question.objects.filter(pk=question.pk).update(
        status="succeeded",
        answer="# Done\n\n<script>x()</script>",
        attempts=1,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
    )
    body = client.get(f"/questions/{question.pk}/live/").json()
    assert (body["status"], body["status_label"], body["finished"]) == (
        "succeeded",
        "Answered",
        True,
    )
    assert "<h1>Done</h1>" in body["html"]
    assert "<script>" not in body["html"]


def test_the_live_view_asks_a_logged_out_user_to_log_in(user):
    question = QuestionFactory(owner=user)
    response = Client().get(f"/questions/{question.pk}/live/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


# --- history --------------------------------------------------------------------------------


def test_history_is_the_users_own_newest_first_and_paginated(user, other_user, client_for):
    now = timezone.now()
    for n in range(23):
        QuestionFactory(owner=user, text=f"mine {n:02d}", created_at=now - timedelta(minutes=n))
    QuestionFactory(owner=other_user, text="not mine")
    client = client_for(user)

    first = client.get("/questions/").content.decode()
    assert "23 questions" in first
    assert first.index("mine 00") < first.index("mine 01")
    assert "mine 19" in first
    assert "mine 20" not in first
    assert "not mine" not in first
    assert 'href="?page=2"' in first

    second = client.get("/questions/?page=2").content.decode()
    assert "mine 20" in second
    assert "mine 22" in second
    assert "mine 00" not in second


def test_history_filters_by_status_and_searches_the_text(user, client_for):
    QuestionFactory(owner=user, text="Where is Paris?")
    QuestionFactory(owner=user, text="Where is Rome?", succeeded=True)
    QuestionFactory(owner=user, text="What is Berlin?", finished=True, status="failed")
    client = client_for(user)

    content = client.get("/questions/", {"status": "succeeded"}).content.decode()
    assert "Rome" in content
    assert "Paris" not in content
    assert "Berlin" not in content

    content = client.get("/questions/", {"q": "where"}).content.decode()
    assert "Paris" in content
    assert "Rome" in content
    assert "Berlin" not in content
    assert "2 questions match the filters" in content

    content = client.get("/questions/", {"q": "where", "status": "queued"}).content.decode()
    assert "Paris" in content
    assert "Rome" not in content


def test_history_with_a_bad_filter_says_so_and_shows_everything(user, client_for):
    QuestionFactory(owner=user, text="Still listed")
    response = client_for(user).get("/questions/", {"status": "bogus"})
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    assert b"Still listed" in response.content


def test_staff_history_shows_everyone_with_owners_and_filters_by_user(staff_user, client_for):
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    QuestionFactory(owner=alice, text="Alice asks")
    QuestionFactory(owner=bob, text="Bob asks")
    client = client_for(staff_user)

    content = client.get("/questions/").content.decode()
    assert "All questions" in content
    assert "Alice asks" in content
    assert "Bob asks" in content
    assert '<strong class="owner">alice</strong>' in content
    assert '<label for="id_owner">Asked by</label>' in content

    content = client.get("/questions/", {"owner": bob.pk}).content.decode()
    assert "Bob asks" in content
    assert "Alice asks" not in content


def test_non_staff_cannot_use_the_owner_filter_to_see_others(user, other_user, client_for):
    QuestionFactory(owner=other_user, text="Secret of someone else")
    content = client_for(user).get("/questions/", {"owner": other_user.pk}).content.decode()
    assert "Secret of someone else" not in content
    assert 'name="owner"' not in content


# --- rendering ------------------------------------------------------------------------------


def test_markdown_renders_as_formatting():
    html = render_markdown("# Title\n\n**bold** and `code`\n\n- one\n- two\n\n```\nx = 1\n```")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert "<li>one</li>" in html
    assert "<pre><code>x = 1" in html


@pytest.mark.parametrize(
    "evil",
    [
        "<script>alert(1)</script>",
        '<img src="x" onerror="alert(1)">',
        "[click](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
        '<iframe src="https://evil.example"></iframe>',
        '<p style="background:url(x)" onclick="alert(1)">x</p>',
        "<svg onload=alert(1)>",
    ],
)
def test_markdown_drops_scripts_handlers_and_dangerous_urls(evil):
    html = render_markdown(f"Hello {evil}").lower()
    for bad in (
        "<script",
        "onerror",
        "onclick",
        "onload",
        "javascript:",
        "<iframe",
        "<img",
        "<svg",
    ):
        assert bad not in html
    assert "style=" not in html


def test_links_are_kept_but_cannot_reach_back_to_the_page():
    html = render_markdown("[docs](https://example.com/docs)")
    assert 'href="https://example.com/docs"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
