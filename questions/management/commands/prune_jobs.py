from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from questions.management.commands._options import int_range
from questions.retention import questions_prune


class Command(BaseCommand):
    help = (
        "Delete finished jobs (question, answer, cache entry) older than the retention period. "
        "Run it daily (cron, a scheduled task) to keep no more than needed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int_range(1),
            default=settings.QUESTIONS_RETENTION_DAYS,
            metavar="DAYS",
            help="Delete jobs created more than this many days ago "
            "(default: QUESTIONS_RETENTION_DAYS, %(default)s).",
        )
        parser.add_argument(
            "--batch-size",
            type=int_range(1, 10_000),
            default=1000,
            help="Rows deleted per transaction (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        cutoff = timezone.now() - timedelta(days=days)
        try:
            report = questions_prune(created_before=cutoff, batch_size=options["batch_size"])
        except DatabaseError as exc:
            raise CommandError(f"Could not delete the jobs: {exc}") from exc
        self.stdout.write(
            f"Deleted {report.deleted} finished jobs created before {cutoff:%Y-%m-%d %H:%M} UTC "
            f"(older than {days} days), in {report.batches} batches."
        )
