"""Where spend shows: the job's cost in the API and on the page; spend per user in the admin
(today, 30 days, quota) with a CSV export; the cost counter in /metrics."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from questions import metrics
from questions.limits import utc_day_start
from questions.models import UserQuota
from tests.factories import QuestionFactory, UserFactory

pytestmark = pytest.mark.django_db

SPEND = "/admin/questions/userspend/"


def test_the_api_shows_the_jobs_cost_as_a_decimal_string(api, user):
    paid = QuestionFactory(owner=user, status="succeeded", cost=Decimal("0.000123"))
    unpaid = QuestionFactory(owner=user)
    assert api.get(f"/api/questions/{paid.pk}/").json()["cost"] == "0.000123"
    assert api.get(f"/api/questions/{unpaid.pk}/").json()["cost"] is None
    listed = {job["id"]: job["cost"] for job in api.get("/api/questions/").json()["results"]}
    assert listed == {str(paid.pk): "0.000123", str(unpaid.pk): None}


def test_the_page_shows_the_jobs_cost(user):
    client = Client()
    client.force_login(user)
    job = QuestionFactory(owner=user, status="succeeded", answer="42", cost=Decimal("0.0042"))
    content = client.get(f"/questions/{job.pk}/").content.decode()
    assert re.search(r'<dd class="cost">\$0\.004200</dd>', content)


def _spend_fixture() -> tuple:
    now = timezone.now()
    today = utc_day_start(now) + timedelta(seconds=1)
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    QuestionFactory(owner=alice, cost=Decimal("0.25"), created_at=today)
    QuestionFactory(owner=alice, cost=Decimal("0.50"), created_at=now - timedelta(days=3))
    QuestionFactory(owner=alice, cost=Decimal("9"), created_at=now - timedelta(days=31))
    QuestionFactory(owner=bob, cost=Decimal("0.01"), created_at=today)
    QuestionFactory(owner=bob, cost=None, created_at=today)  # not paid (yet)
    UserQuota.objects.create(user=bob, daily_budget_usd=Decimal("2"), max_open_jobs=3)
    return alice, bob


def test_the_admin_lists_spend_per_user_today_and_over_30_days(superuser_client, settings):
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal(5)
    settings.QUESTIONS_MAX_OPEN_PER_USER = 10
    _spend_fixture()
    content = superuser_client.get(SPEND).content.decode()
    rows = re.findall(r"<tr>.*?</tr>", content, re.S)
    cells = [re.sub(r"<[^>]+>", "|", row) for row in rows if "alice" in row or "bob" in row]
    alice = next(row for row in cells if "alice" in row)
    bob = next(row for row in cells if "bob" in row)
    assert re.search(r"0\.250000.*0\.750000.*\|2\|.*5\.000000.*\|10\|", alice)
    assert re.search(r"0\.010000.*0\.010000.*\|2\|.*2\.000000.*\|3\|", bob)
    assert content.index("alice") < content.index("bob")  # most spent first


def test_the_admin_exports_spend_per_user_as_csv(superuser_client):
    alice, bob = _spend_fixture()
    bob.username = "=HYPERLINK(evil)"
    bob.save()

    response = superuser_client.post(
        SPEND, {"action": "export_spend_csv", "_selected_action": [alice.pk, bob.pk]}
    )

    assert response["Content-Type"].startswith("text/csv")
    rows = {row["email"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert rows[alice.email]["spend_today_usd"] == "0.250000"
    assert rows[alice.email]["spend_30_days_usd"] == "0.750000"
    assert rows[alice.email]["questions_30_days"] == "2"
    assert rows[bob.email]["daily_budget_usd"] == "2.000000"
    assert rows[bob.email]["max_open_jobs"] == "3"
    assert rows[bob.email]["user"] == "'=HYPERLINK(evil)"  # the formula guard


def test_staff_set_a_users_quota_on_the_spend_page(superuser_client):
    user = UserFactory()
    form = superuser_client.get(f"{SPEND}{user.pk}/change/").content.decode()
    assert "quota-0-daily_budget_usd" in form
    response = superuser_client.post(
        f"{SPEND}{user.pk}/change/",
        {
            "quota-TOTAL_FORMS": "1",
            "quota-INITIAL_FORMS": "0",
            "quota-MIN_NUM_FORMS": "0",
            "quota-MAX_NUM_FORMS": "1",
            "quota-0-daily_budget_usd": "0.75",
            "quota-0-max_open_jobs": "",
            "quota-0-user": str(user.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    quota = UserQuota.objects.get(user=user)
    assert quota.daily_budget_usd == Decimal("0.75")
    assert quota.max_open_jobs is None


def test_the_cost_counter_is_exported_before_the_first_call_and_counts_by_price_entry(client):
    def value(model: str) -> float:
        text = client.get("/metrics").content.decode()
        match = re.search(rf'^questions_llm_cost_usd_total{{model="{model}"}} (\S+)$', text, re.M)
        assert match, f"no series for {model}"
        return float(match.group(1))

    before, other = value("gpt-4o-mini"), value("other")
    metrics.record_llm_cost(model="gpt-4o-mini-2024-07-18", cost=Decimal("0.002"))
    metrics.record_llm_cost(model="x" * 500, cost=Decimal("0.5"))
    metrics.record_llm_cost(model="gpt-4o-mini", cost=None)
    assert value("gpt-4o-mini") - before == pytest.approx(0.002)
    assert value("other") - other == pytest.approx(0.5)
