"""The chores `run_sqs_worker` hands its worker: the requeue sweep, the queue-depth gauge and the
oldest-queued-job gauge.

They run on the worker's chore thread (questions.sqs.chores), their ORM work on the worker's
database threads, and stop with the first SIGTERM.
"""

from __future__ import annotations

import logging

from django.conf import settings

from questions import metrics
from questions.selectors import question_oldest_queued_age
from questions.services import questions_requeue
from questions.sqs.chores import Chore
from questions.sqs.client import get_queue_url
from questions.sqs.queues import queue_depth, queue_facts
from questions.worker.dbpool import run_db_sync

logger = logging.getLogger("questions.sqs.worker")


def requeue_chore(interval: float, queue_name: str) -> Chore:
    """The sweep of questions_requeue: the queue's retention, whether it is drained (asked once
    the sweep holds its lock), then the jobs on the database's clock; one process at a time."""

    def sweep() -> None:
        facts = queue_facts(queue_name)
        report = run_db_sync(
            questions_requeue,
            lost_after=settings.QUESTIONS_REQUEUE_AFTER,
            retention_seconds=facts.retention_seconds,
            queue_drained=lambda: queue_facts(queue_name).drained,
        )
        if report.total:
            logger.info(f"Requeued {report.total} stale jobs.")

    return Chore("requeue", interval, sweep, first_after=min(interval, 5.0))


def queue_depth_chore(queue_name: str, interval: float = 15.0) -> Chore:
    def gauge() -> None:
        for state, value in queue_depth(get_queue_url(queue_name)).items():
            metrics.QUEUE_MESSAGES.labels(queue="main", state=state).set(value)

    return Chore("queue-depth", interval, gauge)


def oldest_queued_chore(interval: float = 15.0) -> Chore:
    """The age of the oldest queued job, from the database (SQS tells its own only to
    CloudWatch). Every worker sets it, alike: one query per worker per interval, and a gauge
    read with max() (a worker pod's gauge never adds to another's)."""

    def gauge() -> None:
        metrics.OLDEST_QUEUED_JOB_AGE.set(run_db_sync(question_oldest_queued_age))

    return Chore("oldest-queued", interval, gauge)
