from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from questions.management.commands._options import int_range
from questions.sqs.queues import queues_create


class Command(BaseCommand):
    help = "Create the SQS queue, its dead-letter queue and the redrive policy (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=settings.SQS_QUEUE_NAME, help="Queue name.")
        parser.add_argument("--dlq", default=settings.SQS_DLQ_NAME, help="Dead-letter queue name.")
        parser.add_argument(
            "--visibility-timeout",
            type=int_range(0, 43200),
            default=settings.SQS_VISIBILITY_TIMEOUT,
            help="Default visibility timeout, seconds.",
        )
        parser.add_argument(
            "--max-receive-count",
            type=int_range(1, 1000),
            default=settings.SQS_MAX_RECEIVE_COUNT,
            help="Deliveries before SQS moves a message to the DLQ.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            created = queues_create(
                queue_name=options["queue"],
                dlq_name=options["dlq"],
                visibility_timeout=options["visibility_timeout"],
                max_receive_count=options["max_receive_count"],
            )
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"Could not create the queues: {exc}") from exc
        self.stdout.write(f"Queue {options['queue']}: {created.queue_url}")
        self.stdout.write(
            f"DLQ   {options['dlq']}: {created.dlq_url} "
            f"(after {options['max_receive_count']} receives)"
        )
