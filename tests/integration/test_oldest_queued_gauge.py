"""questions_oldest_queued_job_age_seconds: the worker's chore reads the oldest queued job's
age from PostgreSQL (queued only: running and finished jobs do not count; 0 with none)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from questions.worker.chores import oldest_queued_chore
from tests.factories import QuestionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def gauge() -> float | None:
    return REGISTRY.get_sample_value("questions_oldest_queued_job_age_seconds")


def test_the_chore_sets_the_age_of_the_oldest_queued_job():
    chore = oldest_queued_chore()
    now = timezone.now()
    QuestionFactory(created_at=now - timedelta(minutes=30), status="succeeded")
    QuestionFactory(created_at=now - timedelta(minutes=20), status="running")
    oldest = QuestionFactory(created_at=now - timedelta(minutes=10))
    QuestionFactory(created_at=now - timedelta(minutes=1))

    chore.run()
    assert 600 <= gauge() < 620

    oldest.status = "cancelled"
    oldest.save()
    chore.run()
    assert 60 <= gauge() < 80

    type(oldest).objects.filter(status="queued").update(status="failed")
    chore.run()
    assert gauge() == 0
