from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from questions.management.commands._options import int_range
from questions.services import UNSENT_GRACE_SECONDS, questions_requeue
from questions.sqs.queues import queue_facts


class Command(BaseCommand):
    help = (
        "Send again the jobs whose message is provably not on the queue: queued jobs SQS never "
        "accepted, queued jobs sent longer ago than the queue keeps a message (or, when the queue "
        "is empty, longer ago than --older-than), running jobs whose lease lapsed longer ago than "
        "--older-than, and with --failed the failed ones. A job merely waiting in a backlog is "
        "never sent twice. The worker runs the same sweep every --requeue-interval."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int_range(0),
            default=settings.QUESTIONS_REQUEUE_AFTER,
            help="Seconds after which a sent job not on an empty queue, or a lapsed lease, counts "
            f"as lost; jobs never sent wait min(this, {UNSENT_GRACE_SECONDS:g}) "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--failed",
            action="store_true",
            help="Also retry failed jobs, with a fresh round of attempts.",
        )
        parser.add_argument(
            "--limit", type=int_range(1), default=1000, help="At most this many jobs per kind."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        facts = queue_facts(settings.SQS_QUEUE_NAME)
        try:
            report = questions_requeue(
                lost_after=options["older_than"],
                retention_seconds=facts.retention_seconds,
                queue_drained=lambda: queue_facts(settings.SQS_QUEUE_NAME).drained,
                unsent_grace=min(options["older_than"], UNSENT_GRACE_SECONDS),
                include_failed=options["failed"],
                limit=options["limit"],
            )
        except DatabaseError as exc:
            raise CommandError(f"Could not read the jobs: {exc}") from exc
        if report.skipped:
            self.stdout.write("Another requeue sweep is running; nothing done.")
            return
        self.stdout.write(
            f"Requeued {report.total} jobs: {report.unsent} never sent, {report.stale} stale, "
            f"{report.expired_claims} with an expired claim, {report.failed} failed."
        )
        if report.not_sent:
            raise CommandError(
                f"{report.not_sent} jobs could not be sent to SQS; they stay queued. "
                "Is SQS reachable?"
            )
