from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from questions.management.commands._options import int_range
from questions.services import questions_requeue


class Command(BaseCommand):
    help = (
        "Send stale jobs to SQS again: queued jobs never sent or not picked up, running jobs "
        "whose worker's claim expired, and with --failed the failed ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int_range(0),
            default=settings.QUESTIONS_REQUEUE_AFTER,
            help="Only jobs waiting longer than this many seconds (default: %(default)s).",
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
        cutoff = timezone.now() - timedelta(seconds=options["older_than"])
        try:
            report = questions_requeue(
                unsent_before=cutoff,
                sent_before=cutoff,
                include_failed=options["failed"],
                limit=options["limit"],
            )
        except DatabaseError as exc:
            raise CommandError(f"Could not read the jobs: {exc}") from exc
        self.stdout.write(
            f"Requeued {report.total} jobs: {report.unsent} never sent, {report.stale} stale, "
            f"{report.expired_claims} with an expired claim, {report.failed} failed."
        )
        if report.not_sent:
            raise CommandError(
                f"{report.not_sent} jobs could not be sent to SQS; they stay queued. "
                "Is SQS reachable?"
            )
