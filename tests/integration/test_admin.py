"""The Django admin's job history: list, filters, search, read-only fields, retry, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import QuestionFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/questions/question/"


def test_the_list_shows_the_columns_staff_need(superuser_client):
    owner = UserFactory(username="carol")
    now = timezone.now()
    QuestionFactory(
        owner=owner,
        text="What is " + "very " * 30 + "long?",
        status="succeeded",
        model="gpt-4o-mini",
        attempts=1,
        prompt_tokens=10,
        completion_tokens=5,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
    )
    response = superuser_client.get(CHANGELIST)
    assert response.status_code == 200
    content = response.content.decode()
    for column in ("short_question", "owner", "status", "model", "attempts", "tokens"):
        assert f"column-{column}" in content
    assert "column-created_at" in content
    assert "column-duration_display" in content
    assert "carol" in content
    assert "gpt-4o-mini" in content
    assert ">15<" in content
    assert "2.0 s" in content
    assert "…" in content  # the question is shortened


def test_filters_search_and_date_hierarchy(superuser_client):
    dave, erin = UserFactory(username="dave"), UserFactory(username="erin")
    QuestionFactory(owner=dave, text="About volcanoes", model="gpt-4o")
    QuestionFactory(failed=True, duration=1, owner=erin, text="About glaciers")
    content = superuser_client.get(CHANGELIST).content.decode()
    assert "By status" in content
    assert "By model" in content
    assert "By owner" in content
    assert (
        'class="xfull"' in content or "date-hierarchy" in content or "?created_at__year=" in content
    )

    def listed(**params) -> str:
        return superuser_client.get(CHANGELIST, params).content.decode()

    assert "glaciers" in listed(status__exact="failed")
    assert "volcanoes" not in listed(status__exact="failed")
    assert "volcanoes" in listed(model__exact="gpt-4o")
    assert "glaciers" not in listed(owner__id__exact=dave.pk)
    assert "volcanoes" in listed(q="volcano")
    assert "glaciers" in listed(q="erin")
    assert "volcanoes" not in listed(q="erin")
    assert "volcanoes" in listed(created_at__year=timezone.now().year)


def test_answer_usage_and_timing_cannot_be_edited_and_jobs_not_added(superuser_client):
    question = QuestionFactory(failed=True, duration=1)
    content = superuser_client.get(f"{CHANGELIST}{question.pk}/change/").content.decode()
    for name in ("answer", "error", "status", "prompt_tokens", "completion_tokens", "started_at"):
        assert f'name="{name}"' not in content
    assert "The language model rejected the question as invalid." in content
    assert superuser_client.get(f"{CHANGELIST}add/").status_code == 403


def test_retry_selected_failed_jobs_requeues_them_and_skips_others(
    superuser_client, queues, django_capture_on_commit_callbacks
):
    failed = QuestionFactory(failed=True, duration=1)
    done = QuestionFactory(status="succeeded", answer="42")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = superuser_client.post(
            CHANGELIST,
            {"action": "retry_failed", "_selected_action": [failed.pk, done.pk]},
            follow=True,
        )
    assert response.status_code == 200
    content = response.content.decode()
    assert "1 failed job queued again." in content
    assert "1 selected job was not failed and left as is." in content
    assert len(callbacks) == 1

    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.error) == ("queued", 0, "")
    assert failed.enqueued_at is not None
    assert queues.depth()["visible"] == 1
    done.refresh_from_db()
    assert done.status == "succeeded"


def test_export_selected_as_csv(superuser_client):
    owner = UserFactory(username="frank")
    first = QuestionFactory(
        failed=True, duration=1, owner=owner, text='=HYPERLINK("http://evil")', prompt_tokens=3
    )
    second = QuestionFactory(owner=owner, text="Plain, with a comma")
    QuestionFactory(text="Not selected")

    response = superuser_client.post(
        CHANGELIST, {"action": "export_csv", "_selected_action": [first.pk, second.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="questions-')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 2
    by_id = {row["id"]: row for row in rows}
    assert by_id[str(first.pk)]["question"] == '\'=HYPERLINK("http://evil")'
    assert by_id[str(first.pk)]["status"] == "failed"
    assert by_id[str(first.pk)]["owner"] == "frank"
    assert by_id[str(first.pk)]["prompt_tokens"] == "3"
    assert by_id[str(first.pk)]["duration_seconds"] == "1.000"
    assert by_id[str(second.pk)]["question"] == "Plain, with a comma"
    assert "Not selected" not in response.content.decode()


def test_non_staff_cannot_open_the_admin(user):
    client = Client()
    client.force_login(user)
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_trace_id_links_to_grafana_tempo(superuser_client, settings):
    settings.TRACE_URL_TEMPLATE = "http://grafana.example/explore?trace={trace_id}"
    job = QuestionFactory(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")

    page = superuser_client.get(f"{CHANGELIST}{job.pk}/change/").content.decode()

    assert '<a href="http://grafana.example/explore?trace=4bf92f3577b34da6a3ce929d0e0e4736"' in page


def test_without_a_trace_url_template_the_trace_id_is_plain_text(superuser_client, settings):
    settings.TRACE_URL_TEMPLATE = None
    job = QuestionFactory(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")

    page = superuser_client.get(f"{CHANGELIST}{job.pk}/change/").content.decode()

    assert "4bf92f3577b34da6a3ce929d0e0e4736" in page
    assert "explore?" not in page
