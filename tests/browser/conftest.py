"""Browser tests: Playwright driving Debian's Chromium (never a downloaded browser) against
pytest-django's live server, with a real worker subprocess, the SQS test server and the
OpenAI-wire test server. Each test leaves screenshots in its artefacts folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.factories import PASSWORD
from tests.support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/ensure-system.sh, "
            "run by `make test`, installs it)."
        )
    # Playwright's sync API keeps an event loop in this thread; Django's ORM (used by the
    # tests and fixtures here) refuses to run beside one unless told it is safe.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser: Browser, artifacts: Path) -> Iterator[Callable[..., Page]]:
    """Open a page in a fresh browser context (its own cookies); screenshot each at the end.

    JavaScript errors on any page fail the test: they are collected in `page.errors`.
    """
    contexts: list[tuple[BrowserContext, Page]] = []

    def open_page(*, viewport: dict[str, int] | None = None, **options: Any) -> Page:
        context = browser.new_context(viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(10_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors  # type: ignore[attr-defined]
        contexts.append((context, page))
        return page

    yield open_page
    for index, (context, page) in enumerate(contexts):
        if not page.is_closed():
            page.screenshot(path=str(artifacts / f"end-{index}.png"), full_page=True)
        context.close()
    for _, page in contexts:
        assert page.errors == [], f"JavaScript errors: {page.errors}"  # type: ignore[attr-defined]


@pytest.fixture
def screenshot(artifacts: Path) -> Callable[[Page, str], Path]:
    """Save a screenshot in the test's artefacts; with UPDATE_DOCS_SCREENSHOTS=1 also in
    docs/screenshots/ (the README links those)."""

    def take(page: Page, name: str, *, docs: bool = False) -> Path:
        path = artifacts / f"{name}.png"
        page.screenshot(path=str(path))
        if docs and os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
        return path

    return take


def log_in(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Through the login form, as a person would."""
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")


def unlabelled_controls(page: Page) -> list[str]:
    """Form controls a screen reader could not name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden' && el.type !== 'submit')
            .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )


def overflows_horizontally(page: Page) -> bool:
    return page.evaluate(
        "() => document.documentElement.scrollWidth > document.documentElement.clientWidth"
    )
