from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from questions.management.commands._options import int_range
from questions.sqs.queues import dlq_redrive


class Command(BaseCommand):
    help = "Move messages from the dead-letter queue back to the queue (receive and resend)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=settings.SQS_QUEUE_NAME, help="Queue name.")
        parser.add_argument("--dlq", default=settings.SQS_DLQ_NAME, help="Dead-letter queue name.")
        parser.add_argument(
            "--limit", type=int_range(1), default=None, help="Move at most this many messages."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = dlq_redrive(
                dlq_name=options["dlq"], queue_name=options["queue"], limit=options["limit"]
            )
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"Could not redrive the DLQ: {exc}") from exc
        self.stdout.write(
            f"Moved {report.moved} messages from {options['dlq']} to {options['queue']}; "
            f"{report.remaining} left in the DLQ."
        )
