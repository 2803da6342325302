"""The answer streams into the page, survives a reload, and can be stopped; the page works
without EventSource, and when gunicorn alone serves it on production settings (WhiteNoise)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import expect

from questions.models import Question
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, UserFactory
from tests.support import GUNICORN, collectstatic, free_port, production_env, serving, wait_until

# One parallel worker runs every browser test: one Chromium (conftest's `browser`).
pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

WORDS = [f"word{n:02d}" for n in range(40)]
STREAMED_ANSWER = "## Streaming\n\n" + " ".join(WORDS)


def _ask(page, base_url: str, question: str) -> str:
    page.goto(f"{base_url}/")
    page.get_by_label("Your question").fill(question)
    page.get_by_role("button", name="Ask").click()
    page.wait_for_url(re.compile(r"/questions/[0-9a-f-]{36}/$"))
    return page.url


def _shown_words(page) -> list[str]:
    return re.findall(r"word\d\d", page.locator("[data-stream-answer]").inner_text())


def test_the_answer_streams_in_survives_a_reload_and_stop_keeps_the_partial_answer(
    live_server, queues, fake_llm, worker_process, new_page, screenshot
):
    # The fake model writes one word every 0.25 s (~10 s in all). Needs the streaming worker.
    fake_llm.configure(answer=STREAMED_ANSWER, stream_interval=0.25, completion_tokens=42)
    UserFactory(username="streamer")
    worker_process().consuming()
    page = new_page()
    log_in(page, live_server.url, "streamer")
    job_url = _ask(page, live_server.url, "Write slowly, please?")

    # The first words are on the page while the model is still writing.
    answer = page.locator("[data-stream-answer]")
    expect(answer).to_contain_text("word02", timeout=15_000)
    expect(answer.get_by_role("heading", name="Streaming")).to_be_visible()
    assert "word39" not in answer.inner_text()
    assert Question.objects.get().status == "running"
    screenshot(page, "streaming")

    # Reload mid-answer: the text so far comes back at once, then it goes on from there.
    before = len(_shown_words(page))
    page.reload()
    expect(answer).to_contain_text(WORDS[before - 1], timeout=5_000)
    wait_until(lambda: len(_shown_words(page)) > before + 2, timeout=10, what="more words")
    shown = _shown_words(page)
    assert shown == WORDS[: len(shown)]  # in order, nothing repeated or lost
    page.evaluate("window.sameDocument = true")

    page.get_by_role("button", name="Stop").click()
    status = page.locator("[data-status-label]")
    expect(status).to_have_text("Cancelled", timeout=10_000)
    partial = page.locator(".answer")
    expect(partial).to_contain_text("word00")
    screenshot(page, "stopped")
    assert page.url == job_url and page.evaluate("window.sameDocument") is True

    question = Question.objects.get()
    assert question.status == "cancelled"
    stored = re.findall(r"word\d\d", question.answer)
    assert 0 < len(stored) < len(WORDS) and stored == WORDS[: len(stored)]
    assert question.completion_tokens is not None
    assert fake_llm.calls == 1


def test_without_eventsource_the_page_polls_and_gets_the_whole_answer(
    live_server, queues, fake_llm, worker_process, new_page
):
    fake_llm.configure(answer="Polled **answer**.", latency=1.0)
    UserFactory(username="poller")
    worker_process().consuming()
    page = new_page()
    page.add_init_script("delete window.EventSource")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    log_in(page, live_server.url, "poller")
    _ask(page, live_server.url, "No EventSource here?")
    page.evaluate("window.sameDocument = true")

    expect(page.locator("[data-status-label]")).to_have_text("Answered", timeout=15_000)
    expect(page.locator(".answer strong")).to_have_text("answer")
    assert page.evaluate("window.sameDocument") is True  # no reload: the script polled
    assert any(url.endswith("/live/") for url in requested)
    assert not any(url.endswith("/events") for url in requested)
    expect(page.locator("[data-refresh-hint]")).to_have_count(0)


@pytest.fixture
def gunicorn_alone(artifacts: Path, queues, fake_llm) -> Iterator[tuple[str, dict[str, str]]]:
    """gunicorn on production settings (DEBUG off), no nginx: static files by WhiteNoise."""
    port = free_port()
    env = production_env(
        DJANGO_ALLOWED_HOSTS="localhost",
        DJANGO_SECURE_HSTS_SECONDS="0",
        GUNICORN_BIND=f"127.0.0.1:{port}",
    )
    collectstatic(env)
    # localhost: Chromium keeps Secure cookies (production's session and CSRF) on it over http.
    base = f"http://localhost:{port}"
    with serving(GUNICORN, env=env, log_path=artifacts / "gunicorn.log", base_url=base):
        yield base, env


def test_gunicorn_alone_on_production_settings_serves_a_styled_page_and_the_answer(
    gunicorn_alone, fake_llm, worker_process, new_page, screenshot
):
    base, env = gunicorn_alone
    fake_llm.configure(answer="Served **without** nginx.", latency=1.0)
    # Production keeps Django's default hashers (tests use a fast MD5 one): a PBKDF2 password.
    hasher = PBKDF2PasswordHasher()
    operator = UserFactory(username="operator")
    type(operator).objects.filter(pk=operator.pk).update(
        password=hasher.encode(PASSWORD, hasher.salt(), iterations=1000)
    )
    # The worker on the same settings, so that it shares the web's cache and stream keys.
    worker_process(
        env={k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DJANGO_SECRET_KEY")}
    ).consuming()
    page = new_page()
    log_in(page, base, "operator")
    _ask(page, base, "Does it work without nginx?")

    # The stylesheet is applied: a badge is a pill (site.css), not the browser's default.
    # (An assertion that retries: the page replaces the badge as the job's status changes, and
    # a badge read just as it was replaced has no computed style.)
    badge = page.locator("[data-status-label]")
    expect(badge).to_have_css("border-top-left-radius", "999px")
    expect(badge).to_have_text("Answered", timeout=15_000)
    expect(page.locator(".answer strong")).to_have_text("without")
    screenshot(page, "gunicorn-alone")

    # WhiteNoise: hashed names, compressed, cached for good.
    css = page.locator("link[rel=stylesheet]").get_attribute("href")
    script = page.locator("script[src]").get_attribute("src")
    assert re.fullmatch(r"/static/css/site\.[0-9a-f]{12}\.css", css or "")
    assert re.fullmatch(r"/static/js/job\.[0-9a-f]{12}\.js", script or "")
    response = requests.get(f"{base}{css}", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert "immutable" in response.headers["Cache-Control"]
    assert "max-age=315360000" in response.headers["Cache-Control"]


def test_a_page_whose_script_does_not_load_refreshes_itself_and_offers_a_link(
    live_server, queues, fake_llm, worker_process, new_page
):
    fake_llm.configure(answer="Arrived anyway.", latency=1.0)
    UserFactory(username="noscriptfile")
    worker_process().consuming()
    page = new_page()
    page.route(re.compile(r".*/static/js/job.*\.js$"), lambda route: route.abort())
    log_in(page, live_server.url, "noscriptfile")
    _ask(page, live_server.url, "What if the script is blocked?")

    expect(page.get_by_role("link", name="Refresh now")).to_be_visible()
    # The server-side refresh brings the answer (the script that would cancel it never ran).
    expect(page.locator("[data-status-label]")).to_have_text("Answered", timeout=15_000)
    expect(page.locator(".answer")).to_contain_text("Arrived anyway.")
