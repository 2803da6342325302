"""A person in Chromium: logs in, asks, watches the answer arrive; privacy between users;
staff browse; an admin retries a failed job. Live server + real worker + OpenAI-wire server."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from questions.models import Question
from questions.services import question_create
from tests.browser.conftest import PHONE, log_in, overflows_horizontally, unlabelled_controls
from tests.factories import PASSWORD, QuestionFactory, UserFactory, reloaded
from tests.support import wait_until

# One parallel worker runs every browser test: one Chromium (conftest's `browser`).
pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

EVIL_QUESTION = "Is <script>window.pwnedByQuestion = 1</script> SQS **durable**?"
MARKDOWN_ANSWER = (
    "## Short answer\n\n"
    "**Yes.** SQS keeps messages *redundantly*:\n\n"
    "- across several servers\n"
    "- until you delete them\n\n"
    "<script>window.pwnedByAnswer = 1</script>"
    '<img src="x" onerror="window.pwnedByImage = 1">'
)


def test_a_user_asks_and_watches_the_answer_arrive_without_reloading(
    live_server, queues, fake_llm, worker_process, new_page, screenshot
):
    fake_llm.configure(latency=2.0, answer=MARKDOWN_ANSWER, prompt_tokens=11, completion_tokens=22)
    user = UserFactory(username="ada")
    worker_process("--concurrency=2").consuming()
    page = new_page()

    page.goto(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    log_in(page, live_server.url, "ada")
    expect(page.get_by_role("heading", level=1)).to_have_text("Ask a question")
    assert unlabelled_controls(page) == []
    screenshot(page, "ask-page", docs=True)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    screenshot(page, "skip-link-focused")

    page.get_by_label("Your question").fill(EVIL_QUESTION)
    page.get_by_role("button", name="Ask").click()
    page.wait_for_url(re.compile(r"/questions/[0-9a-f-]{36}/$"))
    job_url = page.url
    status = page.locator("[data-status-label]")
    expect(status).to_have_text(re.compile("Queued|Running"))
    # A marker that a reload would wipe: the answer must arrive in this same document.
    page.evaluate("window.sameDocument = true")

    expect(status).to_have_text("Running", timeout=12_000)
    screenshot(page, "running")
    expect(status).to_have_text("Answered", timeout=12_000)
    screenshot(page, "answered")

    assert page.url == job_url
    assert page.evaluate("window.sameDocument") is True
    answer = page.locator(".answer")
    expect(answer.get_by_role("heading", name="Short answer")).to_be_visible()
    expect(answer.locator("strong")).to_have_text("Yes.")
    expect(answer.locator("em")).to_have_text("redundantly")
    expect(answer.locator("li")).to_have_count(2)
    expect(answer.locator("script, img")).to_have_count(0)
    # The question's <script> is shown as text, and neither it nor the answer's ran.
    expect(page.locator(".question-text")).to_contain_text("<script>window.pwnedByQuestion")
    assert page.evaluate("[window.pwnedByQuestion, window.pwnedByAnswer, window.pwnedByImage]") == [
        None,
        None,
        None,
    ]
    expect(page.locator("[data-elapsed]")).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
    expect(page.locator(".facts")).to_contain_text("33 (11 in, 22 out)")
    expect(page.locator(".facts")).to_contain_text("gpt-4o-mini")

    question = Question.objects.get()
    assert (question.owner, question.status, question.attempts) == (user, "succeeded", 1)
    assert fake_llm.calls == 1


def test_without_javascript_on_a_phone_the_page_still_works(
    live_server, queues, fake_llm, worker_process, new_page, screenshot
):
    fake_llm.configure(answer="Plain **answer**.")
    UserFactory(username="noscript")
    worker_process().consuming()
    page = new_page(viewport=PHONE, java_script_enabled=False, is_mobile=True, has_touch=True)

    log_in(page, live_server.url, "noscript")
    assert not overflows_horizontally(page)
    page.get_by_label("Your question").fill("Does it work without JavaScript?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_url(re.compile(r"/questions/[0-9a-f-]{36}/$"))
    # The page refreshes itself (<noscript> meta refresh) until the answer is there.
    expect(page.locator("[data-status-label]")).to_have_text("Answered", timeout=14_000)
    expect(page.locator(".answer strong")).to_have_text("answer")
    assert not overflows_horizontally(page)
    screenshot(page, "phone-answered")

    page.get_by_role("link", name="History").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your questions")
    assert not overflows_horizontally(page)
    screenshot(page, "phone-history")


def test_users_see_only_their_own_questions_and_staff_see_everyones(
    live_server, new_page, screenshot
):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    UserFactory(username="sam", is_staff=True)
    alices = QuestionFactory(owner=alice, text="Alice's private question", status="succeeded")
    QuestionFactory(owner=alice, text="Alice asks about queues", status="failed")
    QuestionFactory(owner=bob, text="Bob's question about caches")

    bob_page = new_page()
    log_in(bob_page, live_server.url, "bob")
    response = bob_page.goto(f"{live_server.url}{alices.get_absolute_url()}")
    assert response is not None
    assert response.status == 404
    expect(bob_page.get_by_role("heading", level=1)).to_have_text("Not found")
    expect(bob_page.locator("body")).not_to_contain_text("Alice's private question")
    screenshot(bob_page, "bob-gets-404")

    bob_page.goto(f"{live_server.url}/questions/")
    expect(bob_page.locator(".job-item")).to_have_count(1)
    expect(bob_page.locator(".job-list")).to_contain_text("Bob's question about caches")

    staff_page = new_page()
    log_in(staff_page, live_server.url, "sam")
    staff_page.goto(f"{live_server.url}/questions/")
    expect(staff_page.get_by_role("heading", level=1)).to_have_text("All questions")
    expect(staff_page.locator(".job-item")).to_have_count(3)
    expect(staff_page.locator(".owner")).to_have_text(["bob", "alice", "alice"])
    assert unlabelled_controls(staff_page) == []
    screenshot(staff_page, "history-page", docs=True)

    staff_page.get_by_label("Asked by").select_option(label="alice")
    staff_page.get_by_label("Status").select_option("failed")
    staff_page.get_by_role("button", name="Filter").click()
    expect(staff_page.locator(".job-item")).to_have_count(1)
    expect(staff_page.locator(".job-list")).to_contain_text("Alice asks about queues")

    staff_page.goto(f"{live_server.url}{alices.get_absolute_url()}")
    expect(staff_page.locator(".question-text")).to_have_text("Alice's private question")
    expect(staff_page.locator("dd.owner")).to_have_text("alice")


def test_an_admin_retries_a_failed_job_and_it_then_succeeds(
    live_server, queues, fake_llm, worker_process, new_page, screenshot
):
    # The first call is refused for good (HTTP 400): the job fails at once. The retry succeeds.
    fake_llm.enqueue({"status": 400, "message": "bad request"})
    fake_llm.configure(answer="Second time lucky.")
    UserFactory(username="root", is_staff=True, is_superuser=True)
    asker = UserFactory(username="grace")
    now = timezone.now()
    for n, model in enumerate(("gpt-4o-mini", "gpt-4o")):
        QuestionFactory(
            owner=asker,
            text=f"An earlier question #{n}",
            status="succeeded",
            model=model,
            attempts=1,
            prompt_tokens=20 + n,
            completion_tokens=120 + n,
            started_at=now - timedelta(seconds=3 + n),
            finished_at=now - timedelta(seconds=1),
        )
    worker_process().consuming()
    question, _ = question_create(owner=asker, text="Will this work the second time?")
    wait_until(
        lambda: reloaded(question).status == "failed",
        timeout=30,  # the worker's start-up included, on a loaded machine
        what="the job to fail",
    )

    page = new_page(viewport={"width": 1400, "height": 700})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/questions/question/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    row = page.locator("#result_list tbody tr", has_text="Will this work the second time?")
    expect(row).to_contain_text("Failed")
    screenshot(page, "admin-list", docs=True)

    row.locator('input[name="_selected_action"]').check()
    page.locator('select[name="action"]').select_option("retry_failed")
    page.locator('button[name="index"]').click()
    expect(page.locator(".messagelist")).to_contain_text("1 failed job queued again.")

    wait_until(
        lambda: reloaded(question).status == "succeeded",
        timeout=15,
        what="the retried job to succeed",
    )
    page.reload()
    expect(row).to_contain_text("Succeeded")
    screenshot(page, "admin-after-retry")
    question.refresh_from_db()
    assert (question.answer, question.attempts, question.error) == ("Second time lucky.", 1, "")
    assert fake_llm.calls == 2
