"""Retention: finished jobs older than the retention period are deleted, rows and cache entries,
so that questions and answers are not kept longer than needed (privacy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from questions.cache import job_cache_delete_many
from questions.models import Question


@dataclass(frozen=True, slots=True)
class PruneReport:
    deleted: int
    batches: int


def questions_prune(*, created_before: datetime, batch_size: int = 1000) -> PruneReport:
    """Delete finished jobs created before `created_before`, `batch_size` rows per transaction
    (short locks, bounded memory). Queued and running jobs are left to the worker and
    requeue_jobs: deleting one would pull it from under a worker."""
    deleted = batches = 0
    old = Question.objects.filter(created_at__lt=created_before, status__in=Question.FINISHED)
    while True:
        with transaction.atomic():
            ids = list(old.order_by("created_at").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            # Their webhook deliveries (payloads with the question and answer) go with them;
            # the report counts jobs only.
            _, per_model = Question.objects.filter(pk__in=ids).delete()
        job_cache_delete_many(ids)
        deleted += per_model.get(Question._meta.label, 0)
        batches += 1
    return PruneReport(deleted=deleted, batches=batches)
