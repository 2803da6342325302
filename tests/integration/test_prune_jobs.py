"""`manage.py prune_jobs`: finished jobs past the retention period go, rows and cache entries."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone

from questions.job_cache import job_cache_set
from questions.models import Question
from tests.factories import QuestionFactory

pytestmark = pytest.mark.django_db


def _job(days_old: float, status: str = "succeeded") -> Question:
    job = QuestionFactory(status=status, created_at=timezone.now() - timedelta(days=days_old))
    if job.is_finished:
        job_cache_set(job)
    return job


def test_prune_deletes_old_finished_jobs_and_their_cache_entries_in_batches():
    old = [_job(40 + n, status) for n, status in enumerate(["succeeded", "failed", "cancelled"])]
    old += [_job(50 + n) for n in range(4)]
    recent = _job(5)
    old_but_running = _job(60, "running")
    old_but_queued = _job(60, "queued")
    assert all(cache.get(f"job:{job.pk}") is not None for job in old)

    out = StringIO()
    call_command("prune_jobs", "--older-than=30", "--batch-size=3", stdout=out)

    assert "Deleted 7 finished jobs" in out.getvalue()
    assert "older than 30 days), in 3 batches" in out.getvalue()
    remaining = set(Question.objects.values_list("pk", flat=True))
    assert remaining == {recent.pk, old_but_running.pk, old_but_queued.pk}
    assert all(cache.get(f"job:{job.pk}") is None for job in old)
    assert cache.get(f"job:{recent.pk}") is not None


def test_prune_defaults_to_the_retention_setting(settings):
    settings.QUESTIONS_RETENTION_DAYS = 10
    _job(11)
    kept = _job(9)
    out = StringIO()
    # The default is read when the parser is built, i.e. at each call_command.
    call_command("prune_jobs", stdout=out)
    assert "Deleted 1 finished jobs" in out.getvalue()
    assert list(Question.objects.values_list("pk", flat=True)) == [kept.pk]


def test_prune_with_nothing_to_do_says_so():
    _job(1)
    out = StringIO()
    call_command("prune_jobs", "--older-than=30", stdout=out)
    assert "Deleted 0 finished jobs" in out.getvalue() and "in 0 batches" in out.getvalue()
    assert Question.objects.count() == 1


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_prune_refuses_a_bad_age(value):
    with pytest.raises(CommandError):
        call_command("prune_jobs", f"--older-than={value}", stdout=StringIO())
