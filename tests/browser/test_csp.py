"""The Content-Security-Policy holds on every page and in the admin: Chromium loads each one with
the policy on and reports no violation (console or `securitypolicyviolation` event)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page

from questions.accounts import api_token_create
from tests.browser.conftest import log_in
from tests.factories import QuestionFactory, UserFactory

# One parallel worker runs every browser test: one Chromium (conftest's `browser`).
pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

# Reports every violation of this document to the test, before any of the page's own code runs.
REPORTER = """
document.addEventListener('securitypolicyviolation', (event) => {
  window.reportCspViolation(
    `${event.violatedDirective} blocked ${event.blockedURI || 'inline'} on ${location.pathname}`
  );
});
"""


def _watch(page: Page) -> list[str]:
    violations: list[str] = []
    page.expose_function("reportCspViolation", lambda text: violations.append(text))
    page.add_init_script(REPORTER)
    page.on(
        "console",
        lambda message: (
            violations.append(f"console: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    return violations


def _visit(page: Page, url: str) -> Any:
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy, (url, policy)
    page.wait_for_load_state("networkidle")
    return response


def test_every_page_and_the_admin_load_without_a_csp_violation(live_server, new_page, queues):
    staff = UserFactory(username="grace", is_staff=True, is_superuser=True)
    done = QuestionFactory(
        owner=staff,
        status="succeeded",
        answer="**Bold** and `code`\n\n- a list",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        prompt_tokens=3,
        completion_tokens=4,
    )
    failed = QuestionFactory(owner=staff, status="failed", error="The model refused.")
    running = QuestionFactory(owner=staff, status="running", started_at=timezone.now())
    token = api_token_create(user=staff, name="laptop").token
    base = live_server.url

    page = new_page()
    violations = _watch(page)
    _visit(page, f"{base}/accounts/login/")
    log_in(page, base, "grace")

    for path in [
        "/",
        "/questions/",
        "/questions/?status=failed&q=model",
        f"/questions/{done.pk}/",
        f"/questions/{failed.pk}/",
        f"/questions/{running.pk}/",
        "/account/token/",
        "/account/webhooks/",
        "/api/docs/",
        "/admin/",
        "/admin/questions/question/",
        f"/admin/questions/question/{done.pk}/change/",
        f"/admin/questions/question/{failed.pk}/change/",
        "/admin/questions/apitoken/",
        f"/admin/questions/apitoken/{token.pk}/change/",
        "/admin/questions/webhookendpoint/",
        "/admin/questions/webhookdelivery/",
        "/admin/auth/user/",
        f"/admin/auth/user/{staff.pk}/change/",
        "/admin/auth/user/add/",
        "/admin/axes/accessattempt/",
        "/admin/password_change/",
    ]:
        _visit(page, f"{base}{path}")

    # Interactive parts run their scripts too: Swagger UI renders, a token is made, the
    # admin's filters and actions open.
    _visit(page, f"{base}/api/docs/")
    page.locator(".swagger-ui .info").wait_for()
    _visit(page, f"{base}/account/token/")
    page.get_by_label("Name").fill("from the browser")
    page.get_by_role("button", name="Make a token").click()
    page.locator("#api-token").wait_for()
    _visit(page, f"{base}/admin/questions/question/")
    page.locator("#action-toggle").check()
    _visit(page, f"{base}/admin/auth/user/{staff.pk}/change/")

    assert violations == []

    # The watch itself works: a violation is seen when one happens.
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = 1'; document.body.appendChild(s); }"
    )
    page.wait_for_function("() => true")
    assert page.evaluate("() => window.inlineRan") is None
    page.wait_for_timeout(0)
    assert any("script-src" in v for v in violations), violations
